//! WXBizMsgCrypt against every published vector of protocol §4.8, byte for byte, plus round trips
//! over every padding value and one test per decryption failure.

use super::*;

const KEY_ABC: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const KEY_ZERO: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const KEY_W: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
const KEY_B: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const KEY_PW: &str = "CyjBvGm4tJNmcThkeL5Wajzom4jKlBygKtpTkYeqsnE";

fn crypt(token: &str, key: &str, appid: &str) -> MsgCrypt {
    MsgCrypt::new(
        &SecretString::new(token),
        &SecretString::new(key),
        ComponentAppId::new(appid),
    )
    .expect("valid sample key")
}

fn hex_of(bytes: &[u8]) -> String {
    to_hex(bytes)
}

/// Decrypts with the raw cipher and returns (padding value, plaintext length before unpadding).
fn raw_padding(c: &MsgCrypt, encrypt: &str) -> (u8, usize) {
    let mut buf = STANDARD.decode(encrypt).unwrap();
    c.key.decrypt_in_place(&mut buf).unwrap();
    (*buf.last().unwrap(), buf.len())
}

// ---------------------------------------------------------------------------------------------
// Keys (§4.1)

#[test]
fn sample_keys_decode_including_non_canonical_trailing_bits() {
    assert_eq!(
        hex_of(&decode_aes_key(KEY_ABC).unwrap()),
        "69b71d79f8218a39259a7a29aabb2dbafc31cb3d35db7e39ebbf3d0010831051"
    );
    assert_eq!(decode_aes_key(KEY_ZERO).unwrap(), [0u8; 32]);
    // The strict engine rejects these; ours must not.
    assert!(STANDARD.decode(format!("{KEY_ABC}=")).is_err());
    assert!(STANDARD.decode(format!("{KEY_B}=")).is_err());
    for key in [KEY_W, KEY_B, KEY_PW] {
        assert!(decode_aes_key(key).is_ok(), "{key}");
    }
}

#[test]
fn bad_keys_are_refused() {
    for key in [
        "",
        &KEY_ABC[..42],
        &format!("{KEY_ABC}A"),
        &format!("{}=", &KEY_ABC[..42]),
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDE-G",
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDé",
    ] {
        let result = MsgCrypt::new(
            &SecretString::new("t"),
            &SecretString::new(key),
            ComponentAppId::new("wx"),
        );
        assert_eq!(result.err(), Some(CryptoError::InvalidKey), "{key:?}");
    }
    let ok = crypt("t", KEY_ABC, "wx");
    assert_eq!(
        ok.with_previous_key(&SecretString::new("short")).err(),
        Some(CryptoError::InvalidKey)
    );
}

#[test]
fn debug_never_shows_token_or_key() {
    let c = crypt("very-secret-token", KEY_ABC, "wx0123456789abcdef")
        .with_previous_key(&SecretString::new(KEY_W))
        .unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("very-secret-token"), "{shown}");
    assert!(!shown.contains("abcdefghij"), "{shown}");
    assert!(!shown.contains("kWxPEV2U"), "{shown}");
    assert!(!shown.contains("69b71d79"), "{shown}");
    assert!(!shown.contains("105, 183"), "{shown}"); // 0x69, 0xb7 as decimal bytes
    assert!(shown.contains("wx0123456789abcdef"), "{shown}");
}

// ---------------------------------------------------------------------------------------------
// Signatures (§3)

#[test]
fn signature_vectors() {
    assert_eq!(
        plain_signature("AAAAA", "1714036504", "1514711492"),
        "f464b24fc39322e44b38aa78f5edd27bd1441696"
    );
    assert_eq!(
        plain_signature("AAAAA", "1715943329", "1590219412"),
        "cc0c594499c1634947d5b502f158ee518947db27"
    );
    // wechat-rs
    assert_eq!(
        msg_signature("test", "123456", "test", "rust"),
        "d6056f2bb3ad3e30f4afa5ef90cc9ddcdc7b7b27"
    );
    // Vector T, both signatures.
    assert_eq!(
        msg_signature(
            "component_token_demo",
            "1700000000",
            "1234567890",
            T_ENCRYPT
        ),
        "f3c1c8e5868f4ee0b7dcbb6c083037ae0e1cfcf1"
    );
    assert_eq!(
        plain_signature("component_token_demo", "1700000000", "1234567890"),
        "63c27bef086e5adcc7e3cfb146f4ef04f0850652"
    );
}

#[test]
fn signature_sorts_parts_bytewise() {
    // Same parts in any order give the same signature.
    assert_eq!(
        msg_signature("b", "a", "d", "c"),
        msg_signature("d", "c", "b", "a")
    );
    assert_eq!(
        plain_signature("z", "1", "A"),
        plain_signature("A", "z", "1")
    );
}

#[test]
fn verify_msg_signature_accepts_exact_and_refuses_others() {
    let c = crypt("AAAAA", KEY_ZERO, "wx134c8103faa5a59e");
    let good = "6c12a4205838198b8fa631b3220723bb07f1015c";
    c.verify_msg_signature("1715943329", "1590219412", E_ENCRYPT, good)
        .unwrap();
    for bad in [
        "6c12a4205838198b8fa631b3220723bb07f1015d",
        "6C12A4205838198B8FA631B3220723BB07F1015C",
        "6c12a4205838198b8fa631b3220723bb07f1015",
        "",
    ] {
        assert_eq!(
            c.verify_msg_signature("1715943329", "1590219412", E_ENCRYPT, bad),
            Err(CryptoError::InvalidSignature),
            "{bad}"
        );
    }
    // Any changed input breaks it.
    assert_eq!(
        c.verify_msg_signature("1715943330", "1590219412", E_ENCRYPT, good),
        Err(CryptoError::InvalidSignature)
    );
    assert_eq!(
        c.verify_msg_signature("1715943329", "1590219412", &E_ENCRYPT[1..], good),
        Err(CryptoError::InvalidSignature)
    );
    c.verify_plain_signature(
        "1715943329",
        "1590219412",
        "cc0c594499c1634947d5b502f158ee518947db27",
    )
    .unwrap();
    assert_eq!(
        c.verify_plain_signature(
            "1715943329",
            "1590219413",
            "cc0c594499c1634947d5b502f158ee518947db27"
        ),
        Err(CryptoError::InvalidSignature)
    );
}

// ---------------------------------------------------------------------------------------------
// Vector E — official third-party-platform example

const E_ENCRYPT: &str = "D7yzvUNAL930rd28wf21s4hvXhz0L6Uit/p2Di6C5DHyYGpEgdBRnKjBec34JwoQXicwaZC7fOVihW80F4VtsdvE//1vr7oAbqjDv8KenVp+ajKYpJnyQ4zMRhIC+a31fCVOMC03FfzV/QuC94kBP55a+Za3sJgvAn+ZbsNqZI5DkyuzkhQN8OBqCzFhizGmy0xpM0MEA4agpvE+RuNO1rhHTtuJB5yltw1FiYzecSXJ+y/D2r81VkRn2eYjh2ltsoyfbDR7Is6ookXIFxTfyeNyeHxMeT4KN5WpCDmSbTcUYrbBUlkGLJ9n/rU8YOywma6G7aTb7KZKOqCxgfoUlYEZPk4FUL/TK7ShriFDMVCLyjQJ15Ob++agDWtcxhfUfe6HIoIpRW8mKNBQiY/Jd1svvuskA1wLef1RTtzKfMpagSCX/laZINmdnX4zrF6kIaR9P4xQrWXbsTFHTYe0Mg==";
const E_MSG: &str = "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>\n<FromUserName><![CDATA[o9AgO5Kd5ggOC-bXrbNODIiE3bGY]]></FromUserName>\n<CreateTime>1715943329</CreateTime>\n<MsgType><![CDATA[event]]></MsgType>\n<Event><![CDATA[debug_demo]]></Event>\n<debug_str><![CDATA[hello world]]></debug_str>\n</xml>";

#[test]
fn vector_e_decrypt_k22() {
    let c = crypt("AAAAA", KEY_ZERO, "wx134c8103faa5a59e");
    assert_eq!(
        c.sign("1715943329", "1590219412", E_ENCRYPT),
        "6c12a4205838198b8fa631b3220723bb07f1015c"
    );
    assert_eq!(raw_padding(&c, E_ENCRYPT), (22, 352));
    let msg = c.decrypt(E_ENCRYPT).unwrap();
    assert_eq!(msg.len(), 292);
    assert_eq!(msg, E_MSG);
    // The message is for a mini program, but the receive id is the component appid.
    let other = crypt("AAAAA", KEY_ZERO, "wxba5fad812f8e6fb9");
    assert_eq!(other.decrypt(E_ENCRYPT), Err(CryptoError::AppIdMismatch));
}

#[test]
fn vector_e_reply_encryption() {
    let c = crypt("AAAAA", KEY_ZERO, "wx134c8103faa5a59e");
    let msg = "<xml><demo_resp>[CDATA[good luck]]</demo_resp></xml>";
    assert_eq!(msg.len(), 52);
    let encrypt = c.encrypt_with_random(msg, b"999951349e8ee746");
    assert_eq!(
        encrypt,
        "hE8R6mGXHkJJjU72KxzKUd1GEkKJaEZq7vRL8XgK3o+00k8JGq6+pZJUIlTSyhsX+bxIBQ72g3GyvDdIZcr6+3HAZbSvPT9t/o11MI7d6WELwqrGd7jMnV0zv3Zc9Nq7"
    );
    assert_eq!(STANDARD.decode(&encrypt).unwrap().len(), 96);
    assert_eq!(
        c.sign("1713424427", "415670741", &encrypt),
        "03e0812039325c2712ef5f0f980fd14c70d6e307"
    );
    assert_eq!(c.decrypt(&encrypt).unwrap(), msg);
}

// ---------------------------------------------------------------------------------------------
// Vector C — official Python sample

#[test]
fn vector_c_decrypt() {
    let c = crypt("spamtest", KEY_ABC, "wx2c2769f8efd9abc2");
    let encrypt = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=";
    c.verify_msg_signature(
        "1409735669",
        "1320562132",
        encrypt,
        "5d197aaffba7e9b25a30732f161a50dee96bd5fa",
    )
    .unwrap();
    assert_eq!(raw_padding(&c, encrypt), (2, 320));
    assert_eq!(
        c.decrypt(encrypt).unwrap(),
        "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>\n<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>\n<CreateTime>1409735668</CreateTime>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[abcdteT]]></Content>\n<MsgId>6054768590064713728</MsgId>\n</xml>"
    );
}

// ---------------------------------------------------------------------------------------------
// Vector A — official Java sample, fixed random

#[test]
fn vector_a1_encrypt_k7() {
    let c = crypt("pamtest", KEY_ABC, "wxb11529c136998cb6");
    let msg = "我是中文abcd123";
    assert_eq!(msg.len(), 19);
    let encrypt = c.encrypt_with_random(msg, b"aaaabbbbccccdddd");
    assert_eq!(
        encrypt,
        "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="
    );
    assert_eq!(raw_padding(&c, &encrypt), (7, 64));
    assert_eq!(c.decrypt(&encrypt).unwrap(), msg);
}

#[test]
fn vector_a2_encrypt() {
    let c = crypt("pamtest", KEY_ABC, "wxb11529c136998cb6");
    let msg = "<xml><ToUserName><![CDATA[oia2Tj我是中文jewbmiOUlr6X-1crbLOvLw]]></ToUserName><FromUserName><![CDATA[gh_7f083739789a]]></FromUserName><CreateTime>1407743423</CreateTime><MsgType><![CDATA[video]]></MsgType><Video><MediaId><![CDATA[eYJ1MbwPRJtOvIEabaxHs7TX2D-HV71s79GUxqdUkjm6Gs2Ed1KF3ulAOA9H1xG0]]></MediaId><Title><![CDATA[testCallBackReplyVideo]]></Title><Description><![CDATA[testCallBackReplyVideo]]></Description></Video></xml>";
    let encrypt = c.encrypt_with_random(msg, b"aaaabbbbccccdddd");
    assert_eq!(
        encrypt,
        "jn1L23DB+6ELqJ+6bruv23M2GmYfkv0xBh2h+XTBOKVKcgDFHle6gqcZ1cZrk3e1qjPQ1F4RsLWzQRG9udbKWesxlkupqcEcW7ZQweImX9+wLMa0GaUzpkycA8+IamDBxn5loLgZpnS7fVAbExOkK5DYHBmv5tptA9tklE/fTIILHR8HLXa5nQvFb3tYPKAlHF3rtTeayNf0QuM+UW/wM9enGIDIJHF7CLHiDNAYxr+r+OrJCmPQyTy8cVWlu9iSvOHPT/77bZqJucQHQ04sq7KZI27OcqpQNSto2OdHCoTccjggX5Z9Mma0nMJBU+jLKJ38YB1fBIz+vBzsYjrTmFQ44YfeEuZ+xRTQwr92vhA9OxchWVINGC50qE/6lmkwWTwGX9wtQpsJKhP+oS7rvTY8+VdzETdfakjkwQ5/Xka042OlUb1/slTwo4RscuQ+RdxSGvDahxAJ6+EAjLt9d8igHngxIbf6YyqqROxuxqIeIch3CssH/LqRs+iAcILvApYZckqmA7FNERspKA5f8GoJ9sv8xmGvZ9Yrf57cExWtnX8aCMMaBropU/1k+hKP5LVdzbWCG0hGwx/dQudYR/eXp3P0XxjlFiy+9DMlaFExWUZQDajPkdPrEeOwofJb"
    );
    assert_eq!(c.decrypt(&encrypt).unwrap(), msg);
}

// ---------------------------------------------------------------------------------------------
// Vector EW — EasyWeChat, k = 21

#[test]
fn vector_ew_decrypt_k21() {
    let c = crypt("pamtest", KEY_ABC, "wxb11529c136998cb6");
    let encrypt = "rTNFcsut4LfGuAFKEUVVpwcaCOTJzOd9twZdIW910jb3k+iicx2uvhttIZ3Qg9Qgty3BEF2xbOrz6boTfb30dMomcgrkTqdFPwnhqbk+kIQ7rZiwny9D7NUrTgA5kpX3KsZvrXzUZyP2x9YOlxbgm572lmxKvM7HAQQhIQ/p6HBmoY30bGXFK0BtIu1pW9TjhOYrLQoU18nWYjWqDA1ynkmOytpv7QRI1P1+0NoxL0q2zO1DgeSvnE8CZGo/o5Ap/WHK5W2RAsinpzN4/LjPnmB6U01I5XCoJoC0GK/yMZycd2Oh8Nq6+wBkC1U85oy0ktOY4nLvsQMLrourmMGdZHuTbqpeJ8Ao/5PRYJ+WBvRUwPfGKBL2+2IKZF49vAJqkcGWSHGE76ZN2erXeuNazf/o9o3lIE3q739o4c8t9QGPe31GT2Go/rOz1BsrASwvauNulCh+++yz+CQzBIuikA==";
    c.verify_msg_signature(
        "1458300676",
        "260774613",
        encrypt,
        "4f3ad57b6989f09f4eb392acce4f9e93942ed890",
    )
    .unwrap();
    assert_eq!(
        c.verify_msg_signature("1458300676", "260774613", encrypt, "invalid-signature"),
        Err(CryptoError::InvalidSignature)
    );
    assert_eq!(raw_padding(&c, encrypt), (21, 352));
    let msg = c.decrypt(encrypt).unwrap();
    assert_eq!(msg.len(), 293);
    assert_eq!(
        msg,
        "<xml><URL><![CDATA[http://wechat.laravel.so/server]]></URL><ToUserName><![CDATA[asdasdasd]]></ToUserName><FromUserName><![CDATA[asdasdasdsadasd]]></FromUserName><CreateTime>1234567898</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hello]]></Content><MsgId>12345</MsgId></xml>"
    );
    let wrong = crypt("pamtest", KEY_ABC, "invalid appid");
    assert_eq!(wrong.decrypt(encrypt), Err(CryptoError::AppIdMismatch));
}

// ---------------------------------------------------------------------------------------------
// Vector W — wechatpy (WeCom; the receive id is the corp id)

#[test]
fn vector_w_url_check_echostr() {
    let c = crypt("123456", KEY_W, "wx49f0ab532d5d035a");
    let echostr =
        "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q==";
    c.verify_msg_signature(
        "1411443780",
        "437374425",
        echostr,
        "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96",
    )
    .unwrap();
    assert_eq!(c.decrypt(echostr).unwrap(), "5927782489442352469");
    assert_eq!(
        c.verify_msg_signature(
            "1411443780",
            "437374424",
            echostr,
            "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96"
        ),
        Err(CryptoError::InvalidSignature)
    );
}

#[test]
fn vector_w_encrypt_k3() {
    let c = crypt("123456", KEY_W, "wx49f0ab532d5d035a");
    let msg = "<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[test]]></Content>\n<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>\n<ToUserName><![CDATA[messense]]></ToUserName>\n<AgentID>1</AgentID>\n<CreateTime>1411525903</CreateTime>\n</xml>";
    let encrypt = c.encrypt_with_random(msg, b"1234567890123456");
    assert_eq!(
        encrypt,
        "9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsGaqyw5hhSjdYbcrKk+j3nba4HMOTzHrluLBYqxgNcBqGsL8GqxlhZgURnAtObvesEl5nZ+uBE8bviY0LWke8Zy9V/QYKxNV2FqllNXcfmstttyIkMKCCmVbCFM2JTF5wY0nFhHZSjPUL2Q1qvSUCUld+/WIXrx0oyKQmpB6o8NRrrNrsDf03oxI1p9FxUgMnwKKZeOA/uu+2IEvEBtb7muXsVbwbgX05UPPJvFurDXafG0RQyPR+mf1nDnAtQmmNOuiR5MIkdQ39xn1vWwi1O5oazPoQJz0nTYjxxEE8kv3kFxtAGVRe3ypD3WeK2XeFYFMNMpatF9XiKzHo3"
    );
    assert_eq!(
        c.sign("1411525903", "461056294", &encrypt),
        "407518b7649e86ef23978113f92d27afa9296533"
    );
    assert_eq!(raw_padding(&c, &encrypt).0, 3);
}

#[test]
fn vector_w_decrypt_k1() {
    let c = crypt("123456", KEY_W, "wx49f0ab532d5d035a");
    let encrypt = "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTyeDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYyolBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0=";
    c.verify_msg_signature(
        "1411525903",
        "461056294",
        encrypt,
        "74d92dfeb87ba7c714f89d98870ae5eb62dff26d",
    )
    .unwrap();
    assert_eq!(raw_padding(&c, encrypt).0, 1);
    assert_eq!(
        c.decrypt(encrypt).unwrap(),
        "<xml><ToUserName><![CDATA[wx49f0ab532d5d035a]]></ToUserName>\n<FromUserName><![CDATA[messense]]></FromUserName>\n<CreateTime>1411525903</CreateTime>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[test]]></Content>\n<MsgId>4363689963896700987</MsgId>\n<AgentID>1</AgentID>\n</xml>"
    );
}

#[test]
fn wechat_rs_prp_vector() {
    let c = crypt("test", KEY_W, "rust");
    let encrypt = c.encrypt_with_random("test", b"1234567890123456");
    assert_eq!(encrypt, "9s4gMv99m88kKTh/H8IdkNiFGeG9pd7vNWl50fGRWXY=");
    assert_eq!(c.decrypt(&encrypt).unwrap(), "test");
}

// ---------------------------------------------------------------------------------------------
// Vector B — WeCom URL verification (+ / = in the echostr)

#[test]
fn vector_b_echostr_with_base64_specials() {
    let c = crypt("QDG6eK", KEY_B, "wx5823bf96d3bd56c7");
    let echostr =
        "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==";
    assert!(echostr.contains('+') && echostr.contains('/') && echostr.ends_with("=="));
    c.verify_msg_signature(
        "1409659589",
        "263014780",
        echostr,
        "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3",
    )
    .unwrap();
    assert_eq!(c.decrypt(echostr).unwrap(), "1616140317555161061");
    // The URL-encoded form from the query string decodes back to exactly this value.
    let encoded = "P9nAzCzyDtyTWESHep1vC5X9xho%2FqYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp%2B4RPcs8TgAE7OaBO%2BFZXvnaqQ%3D%3D";
    let decoded: String = url::form_urlencoded::parse(format!("echostr={encoded}").as_bytes())
        .find(|(k, _)| k == "echostr")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert_eq!(decoded, echostr);
}

// ---------------------------------------------------------------------------------------------
// Vector PW — a real server-produced ciphertext, k = 24

#[test]
fn vector_pw_decrypt_k24() {
    let c = crypt(
        "pcoLldqMu2WQQtYBeDX5HiXPsBFlTnDM",
        KEY_PW,
        "wwedab3d5fc43636d8",
    );
    let encrypt = "ZBY4h9SD1Y/v+ighMGU4yHSVWyMuf2UdQQfFuB8S/SY5il9MynR1rtKIJDG871vOqaCs0FVje6bX0VyhvL02PG7FXjRR+rAyiwVv7T7nBGgamkPeOv4n/jXgFQnY6NEt3Zym09t4aI+21pDcE6uN6JzcC+hxw5sBfVyza3NHyuLiyhvalsFbasA4HNcnK+4/3eZLMo+e6yvHUsY4WhmZWW5u5mHcDZm1jtI2fUtzod6Sx7PrCOhm+zUO1I98OD0EmICxHHMjMkGmSFuGhG8vXRKaRavzvV/fkscZK1HjW+XJOV0c9wYDZT+/LTjDS/yx5KkM5lIksiw57DsCro9gvmE1WdvB3bw3m+5ie2x1ZRSuh6ik1rbMTiXgJXt0MnbV8VsyPe1zhkbug1cwdhT9zcOTieb0oyiIl3wSAEkNNBNBaWB+78V1hM/ngMoZgKaaasJUCGtPH/rN+YnxGicDOg==";
    c.verify_msg_signature(
        "1623301925",
        "1624217036",
        encrypt,
        "d728d2bea7e28585ebd14eacbd330d84073fe7f1",
    )
    .unwrap();
    assert_eq!(raw_padding(&c, encrypt).0, 24);
    let msg = c.decrypt(encrypt).unwrap();
    assert_eq!(msg.len(), 290);
    assert_eq!(
        msg,
        "<xml><ToUserName><![CDATA[wwedab3d5fc43636d8]]></ToUserName><FromUserName><![CDATA[WangChaoYi]]></FromUserName><CreateTime>1623301925</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[密文测试]]></Content><MsgId>6972028683187026694</MsgId><AgentID>1000005</AgentID></xml>"
    );
    // PowerWeChat's own test used id 1000005 and did not notice; we do.
    let lenient = crypt("pcoLldqMu2WQQtYBeDX5HiXPsBFlTnDM", KEY_PW, "1000005");
    assert_eq!(lenient.decrypt(encrypt), Err(CryptoError::AppIdMismatch));
}

// ---------------------------------------------------------------------------------------------
// Vector T — component_verify_ticket push (self-generated), k = 30, and the unauthorized push

const T_ENCRYPT: &str = "Q3stYC6hdFzMh9T8HCvyDJmnSR//tju2IFzBQF46csucAg6oB9fAMX8es3mLntsPeTbxOVh1UvgoqkOG+rb9TVKJ4phNF/vLljKESZIbroo6a6j3FnXXf6KuXcuET0rYOKqBrMuTLjSWYD7CNPrTm7hAhYHIMVtOnNHmVjD2Je+JVpn8cT5jLGp4JqXiAXtyCOMR4SHE7uWlV6rL1jopZ+d5hbmDJ0Yan1wfIjFPZQvy1Rgb3zizYElaTC9KOY++r+hhvrSVvHadYApIXreUGXMyGtFZyKZl3kMmp7RhSXZCbV2rTz3qcQReUhwARJpBoKC8RdCNEX2DTAS3AOukiEpryg9fFEWLZ3aURGyPtqSMj05QLoiwJeOOzvei2fiZkrP4v0MIOyFqRXV+ZjW8s4ex1cOJrbtp+e+TXM5ZJME=";
const T_MSG: &str = "<xml><AppId><![CDATA[wx0123456789abcdef]]></AppId>\n<CreateTime>1700000000</CreateTime>\n<InfoType><![CDATA[component_verify_ticket]]></InfoType>\n<ComponentVerifyTicket><![CDATA[ticket@@@demo-ticket-value-0001-0123456789]]></ComponentVerifyTicket>\n</xml>";

#[test]
fn vector_t_ticket_push_k30() {
    let c = crypt("component_token_demo", KEY_ABC, "wx0123456789abcdef");
    assert_eq!(T_MSG.len(), 252);
    assert_eq!(c.encrypt_with_random(T_MSG, b"0123456789abcdef"), T_ENCRYPT);
    assert_eq!(raw_padding(&c, T_ENCRYPT), (30, 320));
    c.verify_msg_signature(
        "1700000000",
        "1234567890",
        T_ENCRYPT,
        "f3c1c8e5868f4ee0b7dcbb6c083037ae0e1cfcf1",
    )
    .unwrap();
    assert_eq!(
        c.sign_plain("1700000000", "1234567890"),
        "63c27bef086e5adcc7e3cfb146f4ef04f0850652"
    );
    assert_eq!(c.decrypt(T_ENCRYPT).unwrap(), T_MSG);
}

#[test]
fn vector_t_unauthorized_push_k13() {
    let c = crypt("component_token_demo", KEY_ABC, "wx0123456789abcdef");
    let msg = "<xml><AppId><![CDATA[wx0123456789abcdef]]></AppId>\n<CreateTime>1700000600</CreateTime>\n<InfoType><![CDATA[unauthorized]]></InfoType>\n<AuthorizerAppid><![CDATA[wxfedcba9876543210]]></AuthorizerAppid>\n</xml>";
    let encrypt = "DpQeJfnf/MGZ/+GTIspwVIE8ydonnRAGLt6kIYRBMz7l1XW2A0JtYaroechyybIvZIGj+x99o1QknyJLmv4MtBtMmb/zCtKttCGUwo1IwHzi6uMTH14QfvMTAQy35+RnV1L4NtLWvrYFHMtI2ku2wDLGzuo0TW3bcnK5iXMuUqvzkjMhApja38t2HHZiBlN82j/QU+7geo7IzT2IbRUr7RxN96+rqw5q8Fm8C0lW5XuZE3fzmPryScTquJMX1aCwNWSHRDs9jWwX3PPJlnoT29CRbSjlT5HjvxdbLOBzafJnpOkkzoa2zG9ANpvdVV5N9QwSqnSCfh6PHbPFyocaTw==";
    assert_eq!(c.encrypt_with_random(msg, b"fedcba9876543210"), encrypt);
    assert_eq!(raw_padding(&c, encrypt).0, 13);
    assert_eq!(
        c.sign("1700000600", "987654321", encrypt),
        "e771e23ea2718ee4af8488bad09deb89abcb63b5"
    );
    assert_eq!(c.decrypt(encrypt).unwrap(), msg);
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn round_trip_every_padding_value() {
    let appid = "wx0123456789abcdef"; // 18 bytes: FullStr = 38 + msg length
    let c = crypt("token", KEY_ABC, appid);
    let mut seen = [false; 33];
    for msg_len in 0..64 {
        let msg: String = "x".repeat(msg_len);
        let random = [u8::try_from(msg_len).unwrap(); 16];
        let encrypt = c.encrypt_with_random(&msg, &random);
        let (k, total) = raw_padding(&c, &encrypt);
        assert_eq!(total % 32, 0);
        assert_eq!(usize::from(k), 32 - (38 + msg_len) % 32);
        seen[usize::from(k)] = true;
        assert_eq!(c.decrypt(&encrypt).unwrap(), msg);
    }
    assert!(seen[1..].iter().all(|&s| s), "every k in 1..=32 exercised");
}

#[test]
fn round_trip_multibyte_and_newlines_kept_verbatim() {
    let c = crypt("token", KEY_B, "wx0123456789abcdef");
    let msg = "  <xml>\n<Nick>昵称 🙂</Nick>\r\n</xml>\n\n";
    let encrypt = c.encrypt(msg);
    assert_eq!(c.decrypt(&encrypt).unwrap(), msg);
    // Random prefix: two encryptions differ but both decrypt.
    let again = c.encrypt(msg);
    assert_ne!(encrypt, again);
    assert_eq!(c.decrypt(&again).unwrap(), msg);
}

#[test]
fn random_prefix_need_not_be_ascii() {
    let c = crypt("token", KEY_ABC, "wx0123456789abcdef");
    let encrypt = c.encrypt_with_random("<xml/>", &[0xff; 16]);
    assert_eq!(c.decrypt(&encrypt).unwrap(), "<xml/>");
}

// ---------------------------------------------------------------------------------------------
// Key rotation

#[test]
fn previous_key_is_tried_after_the_current_one() {
    let old = crypt("token", KEY_ABC, "wx0123456789abcdef");
    let old_ct = old.encrypt("<xml>old</xml>");
    let new_only = crypt("token", KEY_W, "wx0123456789abcdef");
    assert!(new_only.decrypt(&old_ct).is_err());
    let rotated = new_only
        .clone()
        .with_previous_key(&SecretString::new(KEY_ABC))
        .unwrap();
    assert_eq!(rotated.decrypt(&old_ct).unwrap(), "<xml>old</xml>");
    let new_ct = rotated.encrypt("<xml>new</xml>");
    assert_eq!(new_only.decrypt(&new_ct).unwrap(), "<xml>new</xml>");
    // Neither key: the current key's error is reported.
    let third = crypt("token", KEY_PW, "wx0123456789abcdef");
    let third_ct = third.encrypt("<xml>x</xml>");
    assert_eq!(
        rotated.decrypt(&third_ct).err(),
        new_only.decrypt(&third_ct).err()
    );
    assert!(rotated.decrypt(&third_ct).is_err());
}

// ---------------------------------------------------------------------------------------------
// Negative cases: each a specific typed error, never a panic

/// Encrypts an arbitrary raw plaintext (already padded to a multiple of 16) with `c`'s key.
fn encrypt_raw(c: &MsgCrypt, plain: &[u8]) -> String {
    let mut buf = plain.to_vec();
    c.key.encrypt_in_place(&mut buf);
    STANDARD.encode(buf)
}

/// A well-formed FullStr for `msg`/`appid` with no padding yet.
fn full_str(msg: &[u8], len_field: u32, appid: &[u8]) -> Vec<u8> {
    let mut v = b"0123456789abcdef".to_vec();
    v.extend_from_slice(&len_field.to_be_bytes());
    v.extend_from_slice(msg);
    v.extend_from_slice(appid);
    v
}

fn pad32(mut v: Vec<u8>) -> Vec<u8> {
    let k = 32 - v.len() % 32;
    v.resize(v.len() + k, u8::try_from(k).unwrap());
    v
}

const APPID: &str = "wx0123456789abcdef";

#[test]
fn non_base64_and_truncated_ciphertext() {
    let c = crypt("token", KEY_ABC, APPID);
    for bad in [
        "not base64!",
        "Q3st YC6h",
        "Q3stYC6hdFzMh9T8HCvyDJmnSR//tju2IFzBQF46csu",
        "====",
        "Q3stYC6hdFzMh9T8HCvyDJmnSR__tju2IFzBQF46csucAg6oB9fAMX8es3mLntsPeA==",
    ] {
        assert_eq!(c.decrypt(bad), Err(CryptoError::Base64), "{bad}");
    }
    // Truncated at a base64 quantum but not at an AES block: length check.
    assert_eq!(c.decrypt(&T_ENCRYPT[..24]), Err(CryptoError::BadLength));
    // Truncated at a block boundary: decrypts to garbage whose padding or layout is wrong.
    let ct = STANDARD.decode(T_ENCRYPT).unwrap();
    let truncated = STANDARD.encode(&ct[..ct.len() - 16]);
    assert!(matches!(
        c.decrypt(&truncated),
        Err(CryptoError::Padding | CryptoError::Buffer | CryptoError::AppIdMismatch)
    ));
}

#[test]
fn empty_or_unaligned_ciphertext_is_bad_length() {
    let c = crypt("token", KEY_ABC, APPID);
    assert_eq!(c.decrypt(""), Err(CryptoError::BadLength));
    for n in [1, 15, 17, 31, 33, 100] {
        let ct = STANDARD.encode(vec![7u8; n]);
        assert_eq!(c.decrypt(&ct), Err(CryptoError::BadLength), "{n}");
    }
}

#[test]
fn padding_zero_too_large_or_inconsistent() {
    let c = crypt("token", KEY_ABC, APPID);
    let body = full_str(b"<xml/>", 6, APPID.as_bytes()); // 44 bytes
    // k = 0
    let mut zero = body.clone();
    zero.resize(64, 0);
    assert_eq!(
        c.decrypt(&encrypt_raw(&c, &zero)),
        Err(CryptoError::Padding)
    );
    // k = 33 (> 32) and k = 255
    for k in [33u8, 64, 255] {
        let mut big = body.clone();
        big.resize(96, k);
        assert_eq!(
            c.decrypt(&encrypt_raw(&c, &big)),
            Err(CryptoError::Padding),
            "{k}"
        );
    }
    // Inconsistent: last byte says 20, one of the padding bytes differs.
    let mut bad = pad32(body.clone());
    assert_eq!(bad.last(), Some(&20));
    let i = bad.len() - 7;
    bad[i] = 19;
    assert_eq!(c.decrypt(&encrypt_raw(&c, &bad)), Err(CryptoError::Padding));
    // Padding value 16 on a 16-byte-aligned buffer whose padding is only partly there.
    let mut partial = vec![b'a'; 32];
    partial[31] = 32;
    assert_eq!(
        c.decrypt(&encrypt_raw(&c, &partial)),
        Err(CryptoError::Padding)
    );
    // A single block entirely of value 16 is valid padding but too short for the header.
    assert_eq!(
        c.decrypt(&encrypt_raw(&c, &[16u8; 16])),
        Err(CryptoError::Buffer)
    );
    // The well-formed version decrypts.
    assert_eq!(c.decrypt(&encrypt_raw(&c, &pad32(body))).unwrap(), "<xml/>");
}

#[test]
fn length_field_beyond_buffer() {
    let c = crypt("token", KEY_ABC, APPID);
    for len_field in [6 + 18 + 1, 1000, u32::MAX] {
        let plain = pad32(full_str(b"<xml/>", len_field, APPID.as_bytes()));
        assert_eq!(
            c.decrypt(&encrypt_raw(&c, &plain)),
            Err(CryptoError::Buffer),
            "{len_field}"
        );
    }
    // Length field off by one either way: the trailing id is cut wrong and mismatches.
    for len_field in [5u32, 7] {
        let plain = pad32(full_str(b"<xml/>", len_field, APPID.as_bytes()));
        assert_eq!(
            c.decrypt(&encrypt_raw(&c, &plain)),
            Err(CryptoError::AppIdMismatch)
        );
    }
    // Length field consuming the appid exactly: empty trailing id.
    let plain = pad32(full_str(b"<xml/>", 6 + 18, APPID.as_bytes()));
    assert_eq!(
        c.decrypt(&encrypt_raw(&c, &plain)),
        Err(CryptoError::AppIdMismatch)
    );
}

#[test]
fn wrong_appid_and_non_utf8_message() {
    let c = crypt("token", KEY_ABC, APPID);
    let other = crypt("token", KEY_ABC, "wx0123456789abcdee");
    assert_eq!(
        other.decrypt(&c.encrypt("<xml/>")),
        Err(CryptoError::AppIdMismatch)
    );
    // Appid compared exactly: a prefix or a longer id is not accepted.
    let prefix = crypt("token", KEY_ABC, "wx0123456789abcde");
    assert_eq!(
        prefix.decrypt(&c.encrypt("<xml/>")),
        Err(CryptoError::AppIdMismatch)
    );
    let plain = pad32(full_str(&[0xff, 0xfe, b'<'], 3, APPID.as_bytes()));
    assert_eq!(c.decrypt(&encrypt_raw(&c, &plain)), Err(CryptoError::Utf8));
}

#[test]
fn wrong_key_is_a_typed_error() {
    let c = crypt("token", KEY_ABC, APPID);
    for key in [KEY_ZERO, KEY_W, KEY_B, KEY_PW] {
        let other = crypt("token", key, APPID);
        for msg in ["", "<xml/>", T_MSG] {
            let err = other.decrypt(&c.encrypt(msg)).unwrap_err();
            assert!(
                matches!(
                    err,
                    CryptoError::Padding
                        | CryptoError::Buffer
                        | CryptoError::AppIdMismatch
                        | CryptoError::Utf8
                ),
                "{err:?}"
            );
        }
    }
    // Vector T under the all-zero key.
    assert!(crypt("token", KEY_ZERO, APPID).decrypt(T_ENCRYPT).is_err());
}

#[test]
fn garbage_ciphertexts_never_panic() {
    let c = crypt("token", KEY_ABC, APPID);
    // Deterministic pseudo-random garbage of many block counts.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for blocks in 1..=40 {
        let bytes: Vec<u8> = (0..blocks * 16)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_be_bytes()[0]
            })
            .collect();
        assert!(c.decrypt(&STANDARD.encode(bytes)).is_err());
    }
}

#[test]
fn errors_carry_official_codes_and_no_secrets() {
    assert_eq!(CryptoError::InvalidSignature.code(), -40001);
    assert_eq!(CryptoError::AppIdMismatch.code(), -40005);
    assert_eq!(CryptoError::InvalidKey.code(), -40004);
    let c = crypt("secret-token-value", KEY_ABC, APPID);
    let err = c.verify_msg_signature("1", "2", "3", "4").unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("secret-token-value"));
}
