//! The rule that makes `decide/` what it is, as a test.

/// The rule of `decide/`: decisions are functions of plain values. No file
/// in it may reach the API server, the network, a task, the clock, chance,
/// the Context, or the parts of the controller that act.
#[test]
fn the_pure_modules_do_no_io() {
    const FORBIDDEN: [&str; 17] = [
        "kube::Client",
        "kube::api::Api",
        "Api<",
        "Api::",
        "Context",
        "tokio",
        "reqwest",
        "HttpClient",
        "async fn",
        ".await",
        "std::fs",
        "std::net",
        "SystemTime::now()",
        "Instant::now()",
        "rand::",
        "controller::steps",
        "controller::watch",
    ];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/controller");
    let mut files = vec![root.join("decide.rs")];
    let mut dirs = vec![root.join("decide")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !path.to_string_lossy().ends_with("tests.rs")
            {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 13, "{files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // A file's own inline tests may use what they like.
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (n, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for word in FORBIDDEN {
                assert!(
                    !line.contains(word) && !line.contains("controller::fairness"),
                    "{}:{}: `{word}` in a pure module: {line}",
                    file.display(),
                    n + 1
                );
            }
        }
    }
}
