<?php
/**
 * The PHP demo upstream: a plain page behind wechat-oauth-proxy that greets the WeChat user by
 * nickname — after verifying the identity JWT, never by trusting a header as it is.
 * PHP 演示上游：在 wechat-oauth-proxy 后面的一个普通页面，先校验身份 JWT，再用昵称问候用户。
 *
 * It is the router script of PHP's built-in server, so every path lands here:
 *
 *     WECHAT_JWKS_URL=http://127.0.0.1:8080/_wxauth/jwks.json \
 *       php -S 127.0.0.1:8081 examples/php/index.php
 *
 * scripts/demo-php.sh starts it together with the sidecar (examples/php-demo.toml). Settings
 * come from the environment: WECHAT_JWKS_URL, WECHAT_JWT_ISSUER, WECHAT_JWT_AUDIENCE (defaults:
 * the demo configuration's values).
 *
 * The verification is examples/verify/php/wechat_jwt.php, required as it is: the same file an
 * application copies.
 */

declare(strict_types=1);

require __DIR__ . '/../verify/php/wechat_jwt.php';

$jwksUrl = getenv('WECHAT_JWKS_URL') ?: 'http://127.0.0.1:8080/_wxauth/jwks.json';
$issuer = getenv('WECHAT_JWT_ISSUER') ?: 'wechat-oauth-proxy-php-demo';
$audience = getenv('WECHAT_JWT_AUDIENCE') ?: 'legacy-php';

/** HTML-escapes text for element content and quoted attributes. */
function h(string $text): string
{
    return htmlspecialchars($text, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
}

/** Sends one small bilingual page. `$body` is HTML whose variable parts are already escaped. */
function page(int $status, string $title, string $body): void
{
    http_response_code($status);
    header('Content-Type: text/html; charset=utf-8');
    header('Cache-Control: private, no-store');
    header("Content-Security-Policy: default-src 'none'; img-src https: data:; style-src 'unsafe-inline'");
    echo '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<title>', h($title), '</title>',
        '<style>body{font:16px/1.6 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}',
        'img{width:64px;height:64px;border-radius:8px;vertical-align:middle}',
        'td{padding:.2rem .8rem .2rem 0;word-break:break-all}</style></head><body>',
        $body,
        '<p><small>PHP ', h(PHP_VERSION), ' · examples/php/index.php</small></p></body></html>';
}

$token = isset($_SERVER['HTTP_X_WECHAT_JWT']) ? (string) $_SERVER['HTTP_X_WECHAT_JWT'] : '';
// One line per request in the built-in server's log: what reached PHP, and with which header.
error_log(sprintf(
    'request %s %s X-WeChat-Jwt: %s',
    isset($_SERVER['REQUEST_METHOD']) ? $_SERVER['REQUEST_METHOD'] : '?',
    preg_replace('/[^\x21-\x7e]/', '?', isset($_SERVER['REQUEST_URI']) ? $_SERVER['REQUEST_URI'] : '?'),
    $token === '' ? 'absent' : 'present'
));
if ($token === '') {
    // Only what the proxy lets through without a session (its skip rules) arrives without a token.
    page(200, '未登录 / Not signed in',
        '<h1>未登录 / Not signed in</h1>'
        . '<p>这个页面没有收到身份信息（X-WeChat-Jwt）：它是公开页面（skip 规则），'
        . '或者请求没有经过代理。<br>This page received no identity (X-WeChat-Jwt): it is public '
        . '(a skip rule), or the request did not come through the proxy.</p>'
        . '<p><a href="/">登录 / Sign in</a></p>');
    return;
}

try {
    $user = WeChatJwt::verifyRequest($token, $jwksUrl, $issuer, $audience);
} catch (WeChatJwtError $e) {
    error_log('X-WeChat-Jwt refused: ' . $e->getMessage());
    page(401, '身份无效 / Invalid identity',
        '<h1>身份无效 / Invalid identity</h1><p>' . h($e->getMessage()) . '</p>');
    return;
}

$avatar = $user['avatar'];
$showAvatar = strncmp($avatar, 'https://', 8) === 0 || strncmp($avatar, 'data:image/', 11) === 0;
page(200, '你好 / Hello',
    '<h1>' . ($showAvatar ? '<img src="' . h($avatar) . '" alt=""> ' : '')
    . '你好，' . h($user['nickname']) . '！</h1>'
    . '<p>Hello, ' . h($user['nickname']) . '! 这个 PHP 页面校验了代理签发的 JWT。'
    . ' / This PHP page verified the JWT the proxy signed.</p>'
    . '<table>'
    . '<tr><td>openid</td><td>' . h($user['openid']) . '</td></tr>'
    . '<tr><td>unionid</td><td>' . h($user['unionid'] === null ? '—' : $user['unionid']) . '</td></tr>'
    . '<tr><td>appid</td><td>' . h($user['appid']) . '</td></tr>'
    . '</table>'
    . '<p><a href="/_wxauth/logout">退出登录 / Log out</a></p>');
