use std::path::Path;

use super::*;
use crate::ids::Scope;

fn person(appid: &str, openid: &str, unionid: Option<&str>) -> Identity {
    Identity {
        openid: OpenId::new(openid),
        unionid: unionid.map(UnionId::new),
        nickname: String::new(),
        avatar: String::new(),
        appid: AppId::new(appid),
        scope: Scope::Base,
    }
}

fn set<T: From<String> + Eq + Hash>(ids: &[&str]) -> IdSet<T> {
    ids.iter().map(|id| T::from((*id).to_owned())).collect()
}

#[test]
fn list_files_skip_comments_and_blank_lines_and_name_the_bad_line() {
    let text = "# staff\n\no_alice  # Alice\n  o-bob_2\n";
    let ids: IdSet<OpenId> = parse_ids(text, Path::new("staff.txt")).unwrap();
    assert_eq!(ids, set(&["o_alice", "o-bob_2"]));

    let bad = parse_ids::<OpenId>("o_alice\no bob\n", Path::new("staff.txt")).unwrap_err();
    assert_eq!(bad.line, 2);
    assert!(bad.to_string().starts_with("staff.txt:2: "), "{bad}");
    let bad = parse_ids::<UnionId>("\n\no_alice,o_bob\n", Path::new("u.txt")).unwrap_err();
    assert!(bad.to_string().starts_with("u.txt:3: "), "{bad}");
    let long = "a".repeat(MAX_ID_LEN + 1);
    assert_eq!(
        parse_ids::<UnionId>(&long, Path::new("u.txt"))
            .unwrap_err()
            .line,
        1
    );
}

#[test]
fn no_lists_admit_everyone() {
    let lists = AccessLists::default();
    assert!(lists.is_empty());
    assert_eq!(lists.check(&person("wxa", "o1", None)), Ok(()));
    let built = AccessLists::new(
        AccessRules::default(),
        [(AppId::new("wxa"), AccessRules::default())],
    )
    .unwrap();
    assert!(built.is_empty());
}

#[test]
fn deny_wins_over_allow() {
    let rules = AccessRules {
        allow_openids: Some(set(&["o1"])),
        deny_unionids: set(&["u1"]),
        ..AccessRules::default()
    };
    let lists = AccessLists::new(AccessRules::default(), [(AppId::new("wxa"), rules)]).unwrap();
    assert_eq!(
        lists.check(&person("wxa", "o1", Some("u1"))),
        Err(Refusal::Denied)
    );
    assert_eq!(lists.check(&person("wxa", "o1", Some("u2"))), Ok(()));
    assert_eq!(lists.check(&person("wxa", "o1", None)), Ok(()));
}

#[test]
fn an_allow_list_admits_only_listed_people_and_an_empty_one_nobody() {
    let global = AccessRules {
        allow_unionids: Some(set(&["u_staff"])),
        ..AccessRules::default()
    };
    let account = AccessRules {
        allow_openids: Some(set(&["o_guest"])),
        ..AccessRules::default()
    };
    let lists = AccessLists::new(global, [(AppId::new("wxa"), account)]).unwrap();
    // On one of the lists that can admit: in.
    assert_eq!(lists.check(&person("wxa", "o_x", Some("u_staff"))), Ok(()));
    assert_eq!(lists.check(&person("wxa", "o_guest", None)), Ok(()));
    assert_eq!(lists.check(&person("wxb", "o_x", Some("u_staff"))), Ok(()));
    // On none: out; the account's openid list does not reach another account.
    assert_eq!(
        lists.check(&person("wxa", "o_x", Some("u_other"))),
        Err(Refusal::NotAllowed)
    );
    assert_eq!(
        lists.check(&person("wxb", "o_guest", None)),
        Err(Refusal::NotAllowed)
    );

    let empty_allow = AccessRules {
        allow_unionids: Some(IdSet::new()),
        ..AccessRules::default()
    };
    let lists = AccessLists::new(empty_allow, []).unwrap();
    assert!(!lists.is_empty());
    assert_eq!(
        lists.check(&person("wxa", "o1", Some("u1"))),
        Err(Refusal::NotAllowed)
    );
}

#[test]
fn per_account_unionid_lists_stay_with_their_account_and_global_openid_lists_are_refused() {
    let a = AccessRules {
        allow_unionids: Some(set(&["u1"])),
        ..AccessRules::default()
    };
    let b = AccessRules {
        allow_unionids: Some(set(&["u2"])),
        ..AccessRules::default()
    };
    let lists = AccessLists::new(
        AccessRules::default(),
        [(AppId::new("wxa"), a), (AppId::new("wxb"), b)],
    )
    .unwrap();
    assert_eq!(lists.check(&person("wxa", "o1", Some("u1"))), Ok(()));
    assert_eq!(
        lists.check(&person("wxb", "o1", Some("u1"))),
        Err(Refusal::NotAllowed)
    );
    // An account without lists admits everyone.
    assert_eq!(lists.check(&person("wxc", "o1", Some("u1"))), Ok(()));

    let global = AccessRules {
        deny_openids: set(&["o1"]),
        ..AccessRules::default()
    };
    assert_eq!(AccessLists::new(global, []), Err(GlobalOpenIdList));
}
