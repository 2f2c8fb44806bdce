//! JWT bearer tokens: the accepted ones, and every way a token must be refused (expired,
//! not yet valid, wrong issuer or audience, tampered, `alg: none`, algorithm confusion).

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tollgate_control::jwt::{TokenSettings, TokenVerifier};
use tollgate_control::{AuthFailure, Role, Scope};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("test fixture")
            .as_secs(),
    )
    .expect("test fixture")
}

fn claims() -> Value {
    json!({
        "sub": "ci-bot",
        "iss": "https://issuer.test",
        "aud": "tollgate",
        "exp": now() + 300,
        "role": "editor",
        "domains": ["alpha"],
    })
}

struct Keys {
    rsa: EncodingKey,
    ec: EncodingKey,
    /// The RSA public key as PEM: what an attacker would use as an HMAC secret.
    rsa_public_pem: String,
    verifier: TokenVerifier,
}

fn keys() -> Keys {
    let rsa_pair =
        rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .expect("test fixture");
    let ec_pair =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("test fixture");
    let rsa = EncodingKey::from_rsa_pem(rsa_pair.serialize_pem().as_bytes()).expect("test fixture");
    let ec = EncodingKey::from_ec_pem(ec_pair.serialize_pem().as_bytes()).expect("test fixture");
    let mut rsa_jwk = Jwk::from_encoding_key(&rsa, Algorithm::RS256).expect("test fixture");
    rsa_jwk.common.key_id = Some("rsa-1".into());
    let mut ec_jwk = Jwk::from_encoding_key(&ec, Algorithm::ES256).expect("test fixture");
    ec_jwk.common.key_id = Some("ec-1".into());
    let jwks = JwkSet {
        keys: vec![rsa_jwk, ec_jwk],
    };
    let verifier = TokenVerifier::new(&TokenSettings {
        hs256_secret: Some(SECRET.to_vec()),
        jwks: Some(serde_json::to_string(&jwks).expect("test fixture")),
        issuer: "https://issuer.test".into(),
        audience: "tollgate".into(),
        leeway_secs: 30,
    })
    .expect("test fixture");
    Keys {
        rsa,
        ec,
        rsa_public_pem: rsa_pair.public_key_pem(),
        verifier,
    }
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("test fixture")
}

fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET),
        claims,
    )
}

fn b64(bytes: &[u8]) -> String {
    // URL-safe base64 without padding, as JWTs use.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn invalid(verifier: &TokenVerifier, token: &str) -> String {
    match verifier.verify(token) {
        Ok(p) => panic!("accepted {token}: {p:?}"),
        Err(AuthFailure::InvalidToken(why)) => why,
        Err(AuthFailure::Expired) => "expired".into(),
        Err(other) => panic!("unexpected failure {other}"),
    }
}

#[test]
fn valid_tokens_of_each_algorithm_name_their_subject_role_and_domains() {
    let k = keys();
    for token in [
        hs256(&claims()),
        sign(Algorithm::RS256, Some("rsa-1"), &k.rsa, &claims()),
        sign(Algorithm::ES256, Some("ec-1"), &k.ec, &claims()),
        // One key of the token's type: the kid may be left out.
        sign(Algorithm::ES256, None, &k.ec, &claims()),
    ] {
        let principal = k.verifier.verify(&token).unwrap();
        assert_eq!(principal.name, "token:ci-bot");
        assert_eq!(principal.role, Role::Editor);
        assert_eq!(principal.scope, Scope::from_names(["alpha"]));
    }
}

#[test]
fn times_issuer_and_audience_are_enforced_with_a_small_leeway() {
    let k = keys();
    let with = |field: &str, value: Value| {
        let mut c = claims();
        c[field] = value;
        hs256(&c)
    };
    assert_eq!(
        invalid(&k.verifier, &with("exp", json!(now() - 120))),
        "expired"
    );
    // Within the 30 s leeway: still accepted.
    k.verifier.verify(&with("exp", json!(now() - 5))).unwrap();
    let why = invalid(&k.verifier, &with("nbf", json!(now() + 120)));
    assert!(why.contains("ImmatureSignature"), "{why}");
    k.verifier.verify(&with("nbf", json!(now() + 5))).unwrap();
    let why = invalid(&k.verifier, &with("iss", json!("https://evil.test")));
    assert!(why.contains("InvalidIssuer"), "{why}");
    let why = invalid(&k.verifier, &with("aud", json!("someone-else")));
    assert!(why.contains("InvalidAudience"), "{why}");
    let why = invalid(&k.verifier, &with("role", json!("root")));
    assert!(why.contains("unknown role"), "{why}");
    for missing in ["exp", "iss", "aud", "sub", "role", "domains"] {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(missing);
        invalid(&k.verifier, &hs256(&c));
    }
}

#[test]
fn tampered_unsigned_and_confused_tokens_are_refused() {
    let k = keys();
    // Tampered: the payload changed (role raised to admin), signature kept.
    let token = hs256(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let mut raised = claims();
    raised["role"] = json!("admin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(raised.to_string().as_bytes()),
        parts[2]
    );
    invalid(&k.verifier, &tampered);

    // alg: none, with and without a signature.
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims().to_string().as_bytes());
    for t in [
        format!("{none_header}.{payload}."),
        format!("{none_header}.{payload}.{}", parts[2]),
    ] {
        invalid(&k.verifier, &t);
    }

    // Algorithm confusion: HS256 signed with the RSA public key as the HMAC secret.
    let confused = sign(
        Algorithm::HS256,
        Some("rsa-1"),
        &EncodingKey::from_secret(k.rsa_public_pem.as_bytes()),
        &claims(),
    );
    invalid(&k.verifier, &confused);
    // An RS256 header on an ES256 key's kid, and an unknown kid.
    let swapped = sign(Algorithm::RS256, Some("ec-1"), &k.rsa, &claims());
    assert!(invalid(&k.verifier, &swapped).contains("no key"));
    let unknown = sign(Algorithm::RS256, Some("rsa-9"), &k.rsa, &claims());
    assert!(invalid(&k.verifier, &unknown).contains("no key"));
    // Algorithms outside the accepted three.
    let hs512 = sign(
        Algorithm::HS512,
        None,
        &EncodingKey::from_secret(SECRET),
        &claims(),
    );
    assert!(invalid(&k.verifier, &hs512).contains("not accepted"));
    // Garbage.
    for junk in ["", "a.b.c", "tg_x", "....."] {
        invalid(&k.verifier, junk);
    }
}

#[test]
fn a_server_without_a_secret_refuses_hs256() {
    let k = keys();
    let jwks_only = TokenVerifier::new(&TokenSettings {
        hs256_secret: None,
        jwks: Some(
            serde_json::to_string(&JwkSet {
                keys: vec![Jwk::from_encoding_key(&k.ec, Algorithm::ES256).unwrap()],
            })
            .unwrap(),
        ),
        issuer: "https://issuer.test".into(),
        audience: "tollgate".into(),
        leeway_secs: 30,
    })
    .unwrap();
    assert!(invalid(&jwks_only, &hs256(&claims())).contains("HS256"));
    jwks_only
        .verify(&sign(Algorithm::ES256, None, &k.ec, &claims()))
        .unwrap();
}
