//! The bridge's pages, zh-CN first and English below, in the frame of the error pages
//! (`error::shell`). Everything dynamic is escaped here. Stable element ids for tests and
//! browser automation: desktop page `qr` (the SVG's container), `status`, `phone-link`,
//! `tenant`, `refresh`; phone page `confirm`, `cancel` (the two submit buttons), `warning`.

use super::ticket::Status;
use crate::layer::{error::shell, respond::escape_html};

/// What the desktop page shows.
pub(super) struct DesktopPage<'a> {
    pub(super) tenant_name: &'a str,
    pub(super) svg: &'a str,
    pub(super) scan_url: &'a str,
    pub(super) poll_url: &'a str,
    pub(super) refresh_url: &'a str,
    pub(super) expires_in: u64,
    /// Development: the simulator's "act as the phone" link for this code.
    pub(super) dev_phone_link: Option<&'a str>,
}

const DESKTOP_STYLE: &str = "<style>#qr{width:240px;height:240px;margin:1em 0}#qr svg{width:100%;height:100%}\
#qr.stale{opacity:.15}#status{font-weight:600}#phone-link{word-break:break-all;font-size:.85em;\
background:#f4f4f4;padding:.2em .4em}[hidden]{display:none}</style>";

/// The status line for each state (Chinese, English).
fn status_text(status: Status) -> (&'static str, &'static str) {
    match status {
        Status::Pending => ("请使用微信扫一扫登录", "Scan with WeChat to log in"),
        Status::Scanned => ("已扫码，请在手机上确认", "Scanned: confirm on your phone"),
        Status::Approved => ("已确认，正在登录…", "Confirmed, logging you in…"),
        Status::Rejected => ("已在手机上取消", "Cancelled on the phone"),
        Status::Expired => ("二维码已过期", "The QR code has expired"),
    }
}

/// The ~40 lines of script: long-poll the status, show it, navigate on approval. Without
/// script, the `<noscript>` refresh goes to the HTML status page instead.
const SCRIPT: &str = r#"<script>
(function () {
  var page = document.getElementById('qr-page');
  var poll = page.getAttribute('data-poll');
  var status = document.getElementById('status');
  var qr = document.getElementById('qr');
  var refresh = document.getElementById('refresh');
  var texts = {
    pending: '请使用微信扫一扫登录 / Scan with WeChat to log in',
    scanned: '已扫码，请在手机上确认 / Scanned: confirm on your phone',
    approved: '已确认，正在登录… / Confirmed, logging you in…',
    rejected: '已在手机上取消 / Cancelled on the phone',
    expired: '二维码已过期 / The QR code has expired'
  };
  var seen = 'pending';
  function show(s) {
    page.setAttribute('data-status', s);
    status.textContent = texts[s] || texts.expired;
    if (s === 'rejected' || s === 'expired') {
      qr.className = 'stale';
      refresh.hidden = false;
    }
  }
  function next(delay) { setTimeout(ask, delay); }
  function ask() {
    fetch(poll + '&seen=' + seen, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (r) { if (r.status === 404) { return { status: 'expired' }; } if (!r.ok) { throw r.status; } return r.json(); })
      .then(function (j) {
        var changed = j.status !== seen;
        seen = j.status;
        show(j.status);
        if (j.status === 'approved' && j.next) { window.location.replace(j.next); return; }
        if (j.status === 'rejected' || j.status === 'expired') { return; }
        next(changed ? 0 : 1000);
      })
      .catch(function () { next(3000); });
  }
  ask();
})();
</script>"#;

/// The desktop login page: the QR code, the account's name, the link as text, the status.
pub(super) fn desktop(page: &DesktopPage<'_>) -> String {
    let (zh, en) = status_text(Status::Pending);
    let tenant = escape_html(page.tenant_name);
    let head = format!(
        "{DESKTOP_STYLE}<noscript><meta http-equiv=\"refresh\" content=\"5;url={}&amp;html=1\"></noscript>",
        escape_html(page.poll_url)
    );
    let body = format!(
        "<div id=\"qr-page\" data-status=\"pending\" data-poll=\"{poll}\">\
<h1>扫码登录 <span id=\"tenant\">{tenant}</span></h1>\
<div id=\"qr\" role=\"img\" aria-label=\"登录二维码 / login QR code\">{svg}</div>\
<p id=\"status\" aria-live=\"polite\">{zh} / {en}</p>\
<p class=\"retry\" id=\"refresh\" hidden><a href=\"{refresh}\">刷新二维码 / New QR code</a></p>\
<p>请用手机微信“扫一扫”扫描上方二维码，并在手机上确认登录。二维码 {mins} 分钟内有效。\
在电脑上使用微信的用户，也可以把下面的链接发送到微信中打开：</p>\
<p><code id=\"phone-link\">{link}</code></p>{dev}\
<h2 lang=\"en\">Log in with WeChat</h2>\
<p lang=\"en\">Scan the code above with WeChat's “Scan” (扫一扫) on your phone, then confirm on the phone. \
The code is valid for {mins} minutes. If you use WeChat on this computer, you can also open the link \
above in WeChat.</p></div>{SCRIPT}",
        poll = escape_html(page.poll_url),
        svg = page.svg,
        refresh = escape_html(page.refresh_url),
        link = escape_html(page.scan_url),
        mins = page.expires_in.div_ceil(60),
        dev = page.dev_phone_link.map_or_else(String::new, |url| format!(
            "<p class=\"retry\"><a id=\"simulate-scan\" href=\"{}\" target=\"_blank\" rel=\"noopener\">\
模拟手机扫码（开发模式）/ Simulate the scan (development)</a></p>",
            escape_html(url)
        )),
    );
    shell("扫码登录", "Log in with WeChat", &head, &body)
}

/// The no-script status page: refreshes itself while waiting, links on when decided.
pub(super) fn status_page(
    status: Status,
    self_url: &str,
    finish_url: &str,
    refresh_url: &str,
) -> String {
    let (zh, en) = status_text(status);
    let (head, link) = match status {
        Status::Pending | Status::Scanned => (
            format!(
                "<meta http-equiv=\"refresh\" content=\"3;url={}\">",
                escape_html(self_url)
            ),
            String::new(),
        ),
        Status::Approved => (
            format!(
                "<meta http-equiv=\"refresh\" content=\"0;url={}\">",
                escape_html(finish_url)
            ),
            format!(
                "<p class=\"retry\"><a id=\"finish\" href=\"{}\">继续 / Continue</a></p>",
                escape_html(finish_url)
            ),
        ),
        Status::Rejected | Status::Expired => (
            String::new(),
            format!(
                "<p class=\"retry\" id=\"refresh\"><a href=\"{}\">刷新二维码 / New QR code</a></p>",
                escape_html(refresh_url)
            ),
        ),
    };
    let body = format!(
        "<h1>扫码登录</h1><p id=\"status\" data-status=\"{code}\">{zh}</p><p lang=\"en\">{en}</p>{link}",
        code = status.as_str(),
    );
    shell("扫码登录", "Log in with WeChat", &head, &body)
}

/// What the phone's confirmation page shows.
pub(super) struct ConfirmPage<'a> {
    pub(super) site: &'a str,
    pub(super) tenant_name: &'a str,
    pub(super) desktop_agent: &'a str,
    pub(super) desktop_ip: &'a str,
    pub(super) seconds_ago: u64,
    pub(super) other_network: bool,
    pub(super) action: &'a str,
    pub(super) id: &'a str,
    pub(super) token: &'a str,
}

const CONFIRM_STYLE: &str = "<style>form button{font-size:1.1em;padding:.6em 1.4em;border:0;border-radius:4px;\
margin:.3em .5em .3em 0}#confirm{background:#07c160;color:#fff}#cancel{background:#eee;color:#222}\
#warning{background:#fff4e5;border-left:4px solid #f90;padding:.5em .8em}dl{margin:1em 0}\
dt{color:#555;font-size:.9em}dd{margin:0 0 .5em 0;font-weight:600}</style>";

/// The phone's confirmation page: who asks (site, account, desktop browser and system, masked
/// address, how long ago), a warning when the networks differ, and the two buttons (POST).
pub(super) fn confirm(page: &ConfirmPage<'_>) -> String {
    let warning = if page.other_network {
        "<p id=\"warning\">⚠ 电脑与手机不在同一网络。如果不是您本人在电脑上操作，请点击“取消”。<br>\
<span lang=\"en\">The computer is on another network than this phone. If you did not ask to log in \
on that computer yourself, tap Cancel.</span></p>"
    } else {
        ""
    };
    let body = format!(
        "<h1>确认在电脑上登录？</h1>\
<p>您正在用微信身份登录以下网站的电脑端。只有在您本人刚刚扫描了自己电脑上的二维码时才确认。</p>\
<dl><dt>网站 / Site</dt><dd id=\"site\">{site}</dd>\
<dt>公众号 / Account</dt><dd id=\"tenant\">{tenant}</dd>\
<dt>电脑端 / Computer</dt><dd id=\"desktop\">{agent}</dd>\
<dt>电脑的网络地址 / Computer's address</dt><dd id=\"desktop-ip\">{ip}</dd>\
<dt>发起时间 / Asked</dt><dd id=\"age\">{ago} 秒前 / {ago} {unit} ago</dd></dl>{warning}\
<form method=\"post\" action=\"{action}\">\
<input type=\"hidden\" name=\"id\" value=\"{id}\"><input type=\"hidden\" name=\"token\" value=\"{token}\">\
<button id=\"confirm\" type=\"submit\" name=\"decision\" value=\"approve\">确认登录 / Log in</button>\
<button id=\"cancel\" type=\"submit\" name=\"decision\" value=\"reject\">取消 / Cancel</button></form>\
<h2 lang=\"en\">Log in on the computer?</h2>\
<p lang=\"en\">You are about to log the computer above into this site as you. Confirm only if you \
just scanned the code on your own computer.</p>",
        site = escape_html(page.site),
        tenant = escape_html(page.tenant_name),
        agent = escape_html(page.desktop_agent),
        ip = escape_html(page.desktop_ip),
        ago = page.seconds_ago,
        unit = if page.seconds_ago == 1 {
            "second"
        } else {
            "seconds"
        },
        action = escape_html(page.action),
        id = escape_html(page.id),
        token = escape_html(page.token),
    );
    shell("确认登录", "Confirm the login", CONFIRM_STYLE, &body)
}

/// The phone's page after its decision.
pub(super) fn decided(approved: bool) -> String {
    let (zh_title, zh, en_title, en) = if approved {
        (
            "已确认",
            "已确认登录，请回到电脑继续。",
            "Confirmed",
            "The login is confirmed: go back to the computer.",
        )
    } else {
        (
            "已取消",
            "已取消，电脑端不会登录。",
            "Cancelled",
            "Cancelled: the computer will not be logged in.",
        )
    };
    let body = format!(
        "<h1 id=\"decided\" data-approved=\"{approved}\">{zh_title}</h1><p>{zh}</p>\
<h2 lang=\"en\">{en_title}</h2><p lang=\"en\">{en}</p>"
    );
    shell(zh_title, en_title, "", &body)
}
