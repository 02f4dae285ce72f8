//! JWT claims read without trust (issue 11): `keyfed_core::token_facts` (the subject token's
//! `iss`, `aud` and `sub` quoted in hints) and `keyfed_keycloak::DecodedJwt` (every token
//! before its checks), on any text. Neither may panic; what `TokenFacts` reads must be fit for
//! one line of a hint; the two readers must agree on the claims of a token both accept.
#![no_main]

use keyfed_core::SecretString;
use keyfed_core::token_facts::{self, TokenFacts};
use keyfed_keycloak::DecodedJwt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let claims = token_facts::claims(&text);
    let facts = TokenFacts::read(&SecretString::from(text.as_ref()));
    let one_line = |claim: &str| !claim.chars().any(char::is_control);
    let texts = facts.iss.iter().chain(&facts.aud).chain(&facts.sub);
    for claim in texts {
        assert!(
            one_line(claim),
            "a claim with a control character: {claim:?}"
        );
    }
    assert!(one_line(&facts.aud_text()), "{:?}", facts.aud_text());
    if claims.is_none() {
        assert_eq!(facts, TokenFacts::default(), "facts from no claims");
    }
    if let Ok(decoded) = DecodedJwt::parse(&text) {
        assert_eq!(
            claims.as_ref(),
            Some(&decoded.claims),
            "the two readers disagree"
        );
        for name in ["exp", "iat", "nbf"] {
            let _ = decoded.time_claim(name);
        }
        let audience = decoded.audience();
        let _ = audience.to_string();
        assert_eq!(
            audience.0.len(),
            facts.aud.len(),
            "the two readers count different audiences"
        );
    }
});
