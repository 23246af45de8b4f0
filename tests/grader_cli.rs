//! `cft grade` as a user runs it: JSONL on stdin, verdicts on stdout, errors with line numbers.

use std::io::Write;
use std::process::{Command, Stdio};

fn run_grade(input: &str, extra: &[&str]) -> std::io::Result<(i32, String, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cft"))
        .arg("grade")
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn grades_each_line_in_order() -> std::io::Result<()> {
    let input = concat!(
        r#"{"benchmark": "math", "response": "Thus $\\boxed{\\dfrac{1}{2}}$.", "answer": "\\frac{1}{2}"}"#,
        "\n",
        r#"{"benchmark": "gsm8k", "response": "The answer is 17.", "answer": "18"}"#,
        "\n",
        r#"{"benchmark": "svamp", "response": "so 50%", "answer": "0.5"}"#,
        "\n"
    );
    let (code, out, err) = run_grade(input, &[])?;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            r#"{"pred":"\\frac{1}{2}","correct":true}"#,
            r#"{"pred":"17","correct":false}"#,
            r#"{"pred":"50","correct":true}"#,
        ]
    );
    let (_, strict_out, _) = run_grade(input, &["--strict"])?;
    assert!(
        strict_out
            .lines()
            .nth(2)
            .is_some_and(|l| l.contains("false"))
    );
    Ok(())
}

#[test]
fn malformed_line_names_its_number() -> std::io::Result<()> {
    let input = "{\"benchmark\": \"gsm8k\", \"response\": \"1\", \"answer\": \"1\"}\nnot json\n";
    let (code, out, err) = run_grade(input, &[])?;
    assert_eq!(code, 1);
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(out.lines().count(), 1);
    let (code, _, err) = run_grade(
        "{\"benchmark\": \"aime\", \"response\": \"1\", \"answer\": \"1\"}\n",
        &[],
    )?;
    assert_eq!(code, 1);
    assert!(err.contains("line 1") && err.contains("aime"), "{err}");
    Ok(())
}
