use super::*;

#[test]
fn plain_http_and_userinfo_are_refused_by_default() {
    let client = HttpClient::new(HttpPolicy::default()).unwrap();
    let http = Url::parse("http://ehr.example/fhir").unwrap();
    assert!(matches!(
        client.check_url(&http),
        Err(HttpError::InsecureScheme { .. })
    ));
    let creds = Url::parse("https://user:pw@ehr.example/fhir").unwrap();
    let err = client.check_url(&creds).unwrap_err();
    assert!(!err.to_string().contains("pw@"), "{err}");
    let ftp = Url::parse("ftp://ehr.example/").unwrap();
    assert!(matches!(
        client.check_url(&ftp),
        Err(HttpError::UnsupportedScheme { .. })
    ));
}

#[test]
fn plain_http_is_allowed_only_when_the_policy_says_so() {
    let client = HttpClient::new(HttpPolicy {
        allow_http: true,
        ..HttpPolicy::default()
    })
    .unwrap();
    assert!(
        client
            .check_url(&Url::parse("http://ehr.internal.example:8080/").unwrap())
            .is_ok()
    );
}

#[test]
fn clock_skew_is_read_from_the_date_header_in_both_directions() {
    let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let response = |date: Option<SystemTime>| HttpResponse {
        status: 200,
        content_type: None,
        retry_after: None,
        location: None,
        date: date.map(httpdate::fmt_http_date),
        body: Vec::new(),
    };
    let (sent, received) = (at(1_800_000_000), at(1_800_000_002));
    assert_eq!(
        response(Some(at(1_800_000_061))).clock_skew(sent, received),
        Some(60)
    );
    assert_eq!(
        response(Some(at(1_799_999_941))).clock_skew(sent, received),
        Some(-60)
    );
    assert_eq!(response(None).clock_skew(sent, received), None);
    let garbage = HttpResponse {
        date: Some("yesterday".into()),
        ..response(None)
    };
    assert_eq!(garbage.clock_skew(sent, received), None);
}

#[test]
fn bounded_text_strips_control_characters_and_cuts() {
    assert_eq!(bounded_text("a\nb\u{7}c", 10), "a b c");
    assert_eq!(bounded_text(&"x".repeat(20), 5), "xxxxx…");
}
