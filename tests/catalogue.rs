//! THREAT_MODEL.md's catalogue names the test that proves each case; every
//! name there must be a test in this repository.

use std::path::Path;

fn sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn every_test_the_catalogue_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = std::fs::read_to_string(root.join("THREAT_MODEL.md")).unwrap();
    let table = model
        .split("## Catalogue")
        .nth(1)
        .expect("THREAT_MODEL.md has a Catalogue section");
    let mut code = String::new();
    sources(&root.join("src"), &mut code);
    sources(&root.join("tests"), &mut code);
    let mut named = 0;
    let mut risks = 0;
    for row in table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| case"))
    {
        let tests = row.rsplit('|').nth(1).unwrap_or_default();
        assert!(
            tests.contains('`') || tests.trim_start().starts_with("accepted risk:"),
            "a catalogue row names no test and is not an accepted risk: {row}"
        );
        if tests.trim_start().starts_with("accepted risk:") {
            risks += 1;
            let reason = tests.trim_start()["accepted risk:".len()..].trim();
            assert!(reason.len() > 20, "an accepted risk says why: {row}");
            continue;
        }
        for name in tests.split('`').skip(1).step_by(2) {
            named += 1;
            let defined = code.contains(&format!("fn {name}()"));
            let is_test = code
                .split(&format!("fn {name}()"))
                .next()
                .is_some_and(|before| {
                    let before = before.trim_end().trim_end_matches("async").trim_end();
                    let attribute = before.lines().last().unwrap_or_default().trim();
                    attribute == "#[test]" || attribute.starts_with("#[tokio::test")
                });
            assert!(
                defined && is_test,
                "THREAT_MODEL.md names {name}, which is not a test"
            );
        }
    }
    assert!(named >= 40, "the catalogue names {named} tests");
    assert!(
        risks >= 1,
        "the accepted risks are rows of the catalogue too"
    );
}
