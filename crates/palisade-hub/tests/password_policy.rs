//! AUTH-4, AUTH-5, AUTH-6, AUTH-9: password rules at their boundaries, through the real
//! sign-up form, and how the accepted ones are stored.

mod common;

use common::TestHub;
use palisade_crypto::password::{ARGON2_M_KIB, ARGON2_P, ARGON2_T, hash_parameters};
use palisade_hub::ids::Username;

async fn sign_up(hub: &TestHub, username: &str, password: &str) -> common::Page {
    let mut b = hub.browser();
    b.get("/signup").await;
    b.post_form(
        "/signup",
        &[
            ("username", username),
            ("email", &format!("{username}@example.org")),
            ("password", password),
        ],
    )
    .await
}

async fn stored_hash(hub: &TestHub, username: &str) -> Option<String> {
    let name = Username::parse(username).expect("name");
    hub.hub
        .db
        .user_by_username(&name)
        .await
        .expect("db")
        .and_then(|u| u.password_hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_rules_at_their_boundaries() {
    let hub = TestHub::start().await;

    // 14 characters: refused, with the reason.
    let page = sign_up(&hub, "fourteen", "tulip-ocean-gr").await;
    assert!(
        page.body
            .contains("at least 15 characters long (this one has 14)"),
        "{}",
        page.body
    );
    assert!(stored_hash(&hub, "fourteen").await.is_none());

    // 15 characters: accepted.
    let page = sign_up(&hub, "fifteen", "tulip-ocean-gra").await;
    assert!(page.body.contains("Check your e-mail"), "{}", page.body);

    // 64 characters, and longer, accepted and never truncated: the stored hash
    // verifies the full password, not a prefix.
    let long: String = "saffron lantern quietly bends over copper rivers at dusk, slowly"
        .chars()
        .take(64)
        .collect();
    assert_eq!(long.chars().count(), 64);
    sign_up(&hub, "longpass", &long).await;
    let phc = stored_hash(&hub, "longpass")
        .await
        .expect("64-character password accepted");
    let p = palisade_crypto::password::Password::new(&long);
    assert!(palisade_crypto::password::verify(&p, &phc).expect("verify"));
    let prefix = palisade_crypto::password::Password::new(&long[..63]);
    assert!(
        !palisade_crypto::password::verify(&prefix, &phc).expect("verify"),
        "no truncation"
    );

    // Unicode passphrase (code points count, not bytes), accepted.
    let unicode = "ÿöürğñ日本語の山と川です🌲";
    let page = sign_up(&hub, "unicode", unicode).await;
    assert!(page.body.contains("Check your e-mail"), "{}", page.body);
    assert!(stored_hash(&hub, "unicode").await.is_some());

    // Blocklisted (common/breached) and guessable: refused, saying why.
    let page = sign_up(&hub, "common", "passwordpassword").await;
    assert!(
        page.body.contains("too easy to guess") || page.body.contains("common or breached"),
        "{}",
        page.body
    );
    let page = sign_up(&hub, "digits", "123456789012345").await;
    assert!(
        page.status == 200 && page.body.contains("id=\"error\""),
        "{}",
        page.body
    );
    assert!(stored_hash(&hub, "digits").await.is_none());

    // Context words: the user name and the product name.
    let page = sign_up(&hub, "margaret", "margaret-likes-green-tea").await;
    assert!(
        page.body.contains("contains &#34;margaret&#34;")
            || page.body.contains("contains \"margaret\""),
        "{}",
        page.body
    );
    let page = sign_up(&hub, "someone", "my palisade hub passphrase").await;
    assert!(page.body.contains("palisade"), "{}", page.body);

    // No composition rules: a long lower-case passphrase with no digits or symbols is fine.
    let page = sign_up(&hub, "plain", "correct horse battery staple").await;
    assert!(page.body.contains("Check your e-mail"), "{}", page.body);
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_hashes_are_argon2id_with_owasp_parameters_and_unique_salts() {
    let hub = TestHub::start().await;
    sign_up(&hub, "alpha", "orchid tractor velvet monsoon").await;
    sign_up(&hub, "bravo", "orchid tractor velvet monsoon").await;
    let a = stored_hash(&hub, "alpha").await.expect("hash");
    let b = stored_hash(&hub, "bravo").await.expect("hash");
    assert!(a.starts_with("$argon2id$v=19$"), "PHC string: {a}");
    let (alg, m, t, p) = hash_parameters(&a).expect("parameters");
    assert_eq!(alg, "argon2id");
    assert!(m >= 19_456 && t >= 2 && p == 1, "m={m} t={t} p={p}");
    assert_eq!((m, t, p), (ARGON2_M_KIB, ARGON2_T, ARGON2_P));
    assert_ne!(a, b, "the same password hashes differently (unique salts)");
    hub.hub.shutdown().await;
}
