use super::*;

fn response(status: u16, body: &str) -> HttpResponse {
    HttpResponse {
        status,
        content_type: Some("application/json".into()),
        retry_after: None,
        location: None,
        date: None,
        body: body.as_bytes().to_vec(),
    }
}

fn parse(r: &HttpResponse) -> Result<AccessToken, TokenError> {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    parse_token_response(r, t, t)
}

#[test]
fn a_good_response_gives_the_token_with_expiry_from_the_send_time() {
    let sent = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let r = response(
        200,
        r#"{"access_token":"abc","token_type":"bearer","expires_in":300,"scope":"system/Patient.rs"}"#,
    );
    let token = parse_token_response(&r, sent, sent + Duration::from_secs(2)).unwrap();
    assert_eq!(token.access_token.expose(), "abc");
    assert_eq!(token.expires_at, sent + Duration::from_secs(300));
    assert_eq!(token.scope.as_deref(), Some("system/Patient.rs"));
    assert!(!token.expires_in_defaulted);
}

#[test]
fn token_type_is_bearer_in_any_case_and_nothing_else() {
    for t in ["Bearer", "BEARER", "bearer"] {
        let body = format!(r#"{{"access_token":"a","token_type":"{t}","expires_in":60}}"#);
        assert!(parse(&response(200, &body)).is_ok(), "{t}");
    }
    let err = parse(&response(
        200,
        r#"{"access_token":"a","token_type":"DPoP","expires_in":60}"#,
    ))
    .unwrap_err();
    assert!(err.to_string().contains("DPoP"), "{err}");
}

#[test]
fn missing_expires_in_falls_back_to_the_documented_default() {
    let token = parse(&response(
        200,
        r#"{"access_token":"a","token_type":"Bearer"}"#,
    ))
    .unwrap();
    assert_eq!(token.expires_in, DEFAULT_EXPIRES_IN);
    assert!(token.expires_in_defaulted);
    let string = parse(&response(
        200,
        r#"{"access_token":"a","token_type":"Bearer","expires_in":"120"}"#,
    ))
    .unwrap();
    assert_eq!(string.expires_in, Duration::from_secs(120));
}

#[test]
fn absurd_expires_in_and_missing_tokens_are_invalid_responses() {
    for body in [
        r#"{"access_token":"a","token_type":"Bearer","expires_in":-5}"#,
        r#"{"access_token":"a","token_type":"Bearer","expires_in":0}"#,
        r#"{"access_token":"a","token_type":"Bearer","expires_in":99999999999}"#,
        r#"{"access_token":"a","token_type":"Bearer","expires_in":"soon"}"#,
        r#"{"token_type":"Bearer","expires_in":60}"#,
        r#"{"access_token":"","token_type":"Bearer","expires_in":60}"#,
        "<html>hello</html>",
    ] {
        let err = parse(&response(200, body)).unwrap_err();
        assert!(
            matches!(err, TokenError::InvalidResponse(_)),
            "{body}: {err}"
        );
        assert_eq!(err.class(), ErrorClass::Transient { retry_after: None });
    }
}

#[test]
fn oauth_errors_are_typed_and_classified() {
    let body = r#"{"error":"invalid_client","error_description":"unknown kid","error_uri":"https://ehr.example/errors/42"}"#;
    let err = parse(&response(401, body)).unwrap_err();
    assert_eq!(err.oauth_code(), Some("invalid_client"));
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(err.category(), "invalid_client");
    let text = err.to_string();
    assert!(
        text.contains("unknown kid") && text.contains("errors/42"),
        "{text}"
    );

    let scope = parse(&response(400, r#"{"error":"invalid_scope"}"#)).unwrap_err();
    assert_eq!(scope.class(), ErrorClass::Permanent);
    let unavailable = parse(&response(503, r#"{"error":"temporarily_unavailable"}"#)).unwrap_err();
    assert!(matches!(unavailable.class(), ErrorClass::Transient { .. }));
}

#[test]
fn server_error_text_is_bounded_and_never_the_raw_body() {
    let long = "x".repeat(5000);
    let body = format!(
        r#"{{"error":"invalid_request","error_description":"{long}","internal":"secret-detail"}}"#
    );
    let err = parse(&response(400, &body)).unwrap_err().to_string();
    assert!(err.len() < MAX_ERROR_TEXT + 100, "{}", err.len());
    assert!(!err.contains("secret-detail"));
    let html = HttpResponse {
        content_type: Some("text/html".into()),
        ..response(502, "<html><body>upstream secret-detail</body></html>")
    };
    let err = parse(&html).unwrap_err();
    assert!(matches!(err.class(), ErrorClass::Transient { .. }));
    assert!(!err.to_string().contains("secret-detail"), "{err}");
}

#[test]
fn rate_limiting_honours_retry_after_in_both_forms() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut r = response(429, "");
    r.retry_after = Some("17".into());
    let err = parse_token_response(&r, now, now).unwrap_err();
    assert_eq!(
        err.class(),
        ErrorClass::Transient {
            retry_after: Some(Duration::from_secs(17))
        }
    );
    r.retry_after = Some(httpdate::fmt_http_date(now + Duration::from_secs(90)));
    let err = parse_token_response(&r, now, now).unwrap_err();
    assert_eq!(
        err.class(),
        ErrorClass::Transient {
            retry_after: Some(Duration::from_secs(90))
        }
    );
    r.retry_after = None;
    let err = parse_token_response(&r, now, now).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient { retry_after: None });
}

#[test]
fn redirects_are_reported_not_followed() {
    let mut r = response(302, "");
    r.location = Some("https://elsewhere.example/token".into());
    let err = parse(&r).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains("elsewhere.example"), "{err}");
}

#[test]
fn invalid_client_advice_names_the_kid_and_the_client() {
    let err = parse(&response(401, r#"{"error":"invalid_client"}"#)).unwrap_err();
    let endpoint = Url::parse("https://ehr.example/token").unwrap();
    let text = advice(&err, "client-7", "kid-9", &endpoint);
    assert!(
        text.contains("client-7") && text.contains("kid-9"),
        "{text}"
    );
}
