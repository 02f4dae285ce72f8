//! issue 13: `keyfed completions` and `keyfed man` as a shell and a man reader take them — bash
//! completes from the script keyfed prints, groff renders the page without a warning — and
//! both stop quietly (141) when their reader has gone.

use std::process::Stdio;

use crate::util::{Fixture, Known, Serves, process};

/// What bash's completion gives for the words of `line` (the last one being completed), with
/// the script `keyfed completions bash` printed. Completing an empty word, clap's script offers
/// the options beside the values; only the values are kept unless the word starts with `-`.
async fn bash_completes(fx: &Fixture, line: &[&str]) -> Vec<String> {
    let keep_options = line.last().is_some_and(|w| w.starts_with('-'));
    let script = fx.path("keyfed.bash");
    if !script.exists() {
        let run = fx.keyfed(&["completions", "bash"]).await;
        run.ok();
        std::fs::write(&script, &run.stdout).unwrap_or_else(|e| panic!("{e}"));
    }
    let words = line
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ");
    // clap's script registers `_keyfed` for keyfed (`complete -F _keyfed … keyfed`); bash
    // calls it with the command's name, the word being completed and the one before it.
    let program = format!(
        "source '{script}' || exit 9\n\
         complete -p keyfed | grep -q -- '-F _keyfed' || exit 8\n\
         COMP_WORDS=({words}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}\n\
         _keyfed keyfed \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script = script.display(),
    );
    let mut bash = tokio::process::Command::new("bash");
    bash.arg("--norc").arg("-c").arg(program);
    let run = process::run("bash completion", bash, &Known::default(), Serves::Nothing).await;
    run.ok();
    let mut words: Vec<String> = run
        .stdout
        .split_whitespace()
        .filter(|w| keep_options || !w.starts_with('-'))
        .map(str::to_owned)
        .collect();
    words.sort();
    words
}

#[tokio::test]
async fn bash_completes_subcommands_flags_and_values_issue_13() {
    let fx = Fixture::new();
    assert_eq!(bash_completes(&fx, &["keyfed", "doc"]).await, ["doctor"]);
    assert_eq!(
        bash_completes(&fx, &["keyfed", "c"]).await,
        ["check", "completions", "credential-process"]
    );
    assert_eq!(
        bash_completes(&fx, &["keyfed", "trust", "aws", "--for"]).await,
        ["--format"]
    );
    assert_eq!(
        bash_completes(&fx, &["keyfed", "trust", "aws", "--format", ""]).await,
        ["json", "shell", "terraform"]
    );
    assert_eq!(
        bash_completes(&fx, &["keyfed", "completions", ""]).await,
        ["bash", "elvish", "fish", "powershell", "zsh"]
    );
    assert_eq!(
        bash_completes(&fx, &["keyfed", "--log-level", ""]).await,
        ["debug", "error", "info", "trace", "warn"]
    );
}

/// The page rendered by groff for a terminal, with every warning on: what groff says on
/// standard error, and the text. `None` when groff is not installed and
/// `KEYFED_TEST_ALLOW_SKIP=1` says that is fine.
pub async fn render(test: &str, page: &std::path::Path) -> Option<(String, String)> {
    if std::process::Command::new("groff")
        .arg("--version")
        .output()
        .is_err()
    {
        crate::util::cannot_run(
            test,
            "groff is not installed (apt-get install groff-base)",
            "run tests/run",
        );
        return None;
    }
    let mut groff = tokio::process::Command::new("groff");
    groff
        .args(["-man", "-Tutf8", "-ww", "-rLL=80n"])
        .arg(page)
        .env("LC_ALL", "C.UTF-8");
    let run = process::run("groff", groff, &Known::default(), Serves::Nothing).await;
    run.ok();
    Some((run.stderr, run.stdout))
}

#[tokio::test]
async fn the_man_page_renders_without_warnings_issue_13() {
    let fx = Fixture::new();
    let run = fx.keyfed(&["man"]).await;
    run.ok();
    let page = fx.path("keyfed.1");
    std::fs::write(&page, &run.stdout).unwrap_or_else(|e| panic!("{e}"));
    let Some((warnings, text)) = render("the_man_page_renders_without_warnings", &page).await
    else {
        return;
    };
    assert_eq!(warnings, "", "groff warned about the page");
    // groff marks bold by overstriking for a terminal; the words are what matters here.
    let text = strip_overstrike(&text);
    for needle in [
        "keyfed trust",
        "--jwks-file <PATH>",
        "EXIT STATUS",
        "/run/keyfed/keyfed.sock",
        "JOURNAL_STREAM",
    ] {
        assert!(
            text.contains(needle),
            "{needle} not in the rendered page:\n{text}"
        );
    }
}

/// Text as a terminal shows it: `x\bx` (bold) and `_\bx` (underline) become `x`, and groff's
/// Unicode hyphen and minus become `-`.
pub fn strip_overstrike(text: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{8}' {
            out.pop();
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out.into_iter()
        .collect::<String>()
        .replace(['\u{2010}', '\u{2212}'], "-")
}

/// issue 13: `keyfed man | head -1`-like: the reader gone, keyfed stops with 141 and says
/// nothing (as for every command that prints, `stdout.rs`).
#[tokio::test]
async fn man_and_completions_stop_quietly_when_the_reader_has_gone_issue_13() {
    let fx = Fixture::new();
    for args in [&["man"][..], &["completions", "zsh"][..]] {
        // The reader is gone before keyfed starts, so its first write fails, however fast.
        let (reader, writer) = std::io::pipe().unwrap_or_else(|e| panic!("{e}"));
        drop(reader);
        let mut command = fx.keyfed_command(&[], args, &[]);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("keyfed {args:?}: {e}"));
        drop(command);
        let output = child
            .wait_with_output()
            .await
            .unwrap_or_else(|e| panic!("keyfed {args:?}: {e}"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        fx.known.check(
            &format!("keyfed {}", args.join(" ")),
            Serves::Nothing,
            "",
            &stderr,
        );
        assert_eq!(output.status.code(), Some(141), "keyfed {args:?}: {stderr}");
        assert_eq!(stderr, "", "keyfed {args:?}");
    }
}
