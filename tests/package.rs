//! issue 13: the Debian package `tests/package/build` makes, as an operator gets it. Its path
//! comes in `KEYFED_TEST_DEB` (tests/run builds it beside the other tests). The archive holds
//! exactly the promised files with root's ownership and the promised modes; the control fields
//! are complete, its version grows with every commit; unpacked (`dpkg -x`), its keyfed runs,
//! refuses the demo with its reason (and its page and completions leave the demo out), and its
//! units, snippets, examples, man page and completions are the repository's and the binary's
//! own; the maintainer scripts are systemd/deb/'s, with md5sums of every file; lintian
//! --pedantic shows no tag at all, informational and experimental ones included.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::manual::{render, strip_overstrike};
use crate::util::{Known, Serves, process};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The package under test, or `None` (with a `SKIPPED:` line) when `KEYFED_TEST_DEB` is unset
/// and `KEYFED_TEST_ALLOW_SKIP=1` says that is fine.
fn deb(test: &str) -> Option<PathBuf> {
    let Ok(path) = std::env::var("KEYFED_TEST_DEB") else {
        crate::util::cannot_run(
            test,
            "no package: KEYFED_TEST_DEB is unset (tests/run builds one with tests/package/build)",
            "run tests/run",
        );
        return None;
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "{test}: KEYFED_TEST_DEB={} is no file",
        path.display()
    );
    Some(path)
}

/// The package's version as tests/package/build makes it from the checkout:
/// `<version>+git<UTC commit time>.<short commit>-1`, with `.dirty` before the `-1` (and the
/// build time for the commit time) when the tree had uncommitted changes.
async fn expected_version(deb: &Path) -> String {
    let short = tool("git", &["-C", REPO, "rev-parse", "--short", "HEAD"]).await;
    let epoch = tool("git", &["-C", REPO, "log", "-1", "--format=%ct"]).await;
    let time = tool(
        "date",
        &["-u", "-d", &format!("@{}", epoch.trim()), "+%Y%m%d%H%M%S"],
    )
    .await;
    let (short, time) = (short.trim(), time.trim());
    let name = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.contains(".dirty-1_") {
        let stamp = name
            .strip_prefix(&format!("keyfed_{VERSION}+git"))
            .and_then(|rest| rest.get(..14))
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or_else(|| panic!("{name}: no build time after +git"));
        format!("{VERSION}+git{stamp}.{short}.dirty-1")
    } else {
        format!("{VERSION}+git{time}.{short}-1")
    }
}

/// Runs a tool that prints nothing secret; its standard output.
async fn tool(program: &str, args: &[&str]) -> String {
    let mut command = tokio::process::Command::new(program);
    command.args(args);
    let what = format!("{program} {}", args.join(" "));
    let run = process::run(&what, command, &Known::default(), Serves::Nothing).await;
    run.ok();
    run.stdout
}

/// The files of the repository matching `folder/*.suffix`, by name.
fn sources(folder: &str, prefix: &str, suffix: &str) -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(Path::new(REPO).join(folder))
        .unwrap_or_else(|e| panic!("{folder}: {e}"))
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            (name.starts_with(prefix) && name.ends_with(suffix)).then(|| (name, entry.path()))
        })
        .collect();
    found.sort();
    found
}

/// Every file the package installs from the repository: its path in the package and its source.
fn installed_sources() -> Vec<(String, PathBuf)> {
    let systemd = |name: &str| Path::new(REPO).join("systemd").join(name);
    let mut files = vec![
        (
            "usr/share/doc/keyfed/README.md".to_owned(),
            Path::new(REPO).join("README.md"),
        ),
        (
            "usr/lib/sysusers.d/keyfed.conf".to_owned(),
            systemd("keyfed.sysusers"),
        ),
        (
            "usr/lib/tmpfiles.d/keyfed.conf".to_owned(),
            systemd("keyfed.tmpfiles"),
        ),
        (
            "usr/share/lintian/overrides/keyfed".to_owned(),
            systemd("deb/lintian-overrides"),
        ),
    ];
    for unit in UNITS {
        files.push((format!("usr/lib/systemd/system/{unit}"), systemd(unit)));
    }
    let examples =
        sources("config", "", ".toml")
            .into_iter()
            .chain(sources("systemd", "consumer-", ".conf"));
    for (name, path) in examples {
        files.push((format!("usr/share/doc/keyfed/examples/{name}"), path));
    }
    files
}

const UNITS: [&str; 4] = [
    "keyfed.service",
    "keyfed@.service",
    "keyfed-once.service",
    "keyfed-once.timer",
];

/// Files the build generates, with the binary's own.
const GENERATED: [&str; 7] = [
    "usr/bin/keyfed",
    "usr/share/man/man1/keyfed.1.gz",
    "usr/share/bash-completion/completions/keyfed",
    "usr/share/zsh/vendor-completions/_keyfed",
    "usr/share/fish/vendor_completions.d/keyfed.fish",
    "usr/share/doc/keyfed/copyright",
    "usr/share/doc/keyfed/changelog.Debian.gz",
];

#[tokio::test]
async fn the_package_holds_exactly_the_promised_files_issue_13() {
    let Some(deb) = deb("the_package_holds_exactly_the_promised_files") else {
        return;
    };
    let listing = tool("dpkg-deb", &["-c", &deb.to_string_lossy()]).await;
    let mut files = BTreeMap::new();
    for line in listing.lines() {
        // drwxr-xr-x root/root         0 2026-11-26 03:12 ./usr/
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [mode, owner, _size, _date, _time, path] = fields[..] else {
            panic!("an entry that is no plain file or folder: {line}");
        };
        // cargo-deb writes numeric owners only.
        assert!(matches!(owner, "root/root" | "0/0"), "{line}");
        let path = path.trim_start_matches("./");
        match mode.chars().next() {
            Some('d') => assert_eq!(mode, "drwxr-xr-x", "{line}"),
            Some('-') => {
                files.insert(path.to_owned(), mode.to_owned());
            }
            _ => panic!("an entry that is no plain file or folder: {line}"),
        }
    }
    let mut expected: BTreeMap<String, String> = installed_sources()
        .into_iter()
        .map(|(path, _)| (path, "-rw-r--r--".to_owned()))
        .chain(
            GENERATED
                .iter()
                .map(|p| ((*p).to_owned(), "-rw-r--r--".to_owned())),
        )
        .collect();
    expected.insert("usr/bin/keyfed".to_owned(), "-rwxr-xr-x".to_owned());
    assert_eq!(files, expected, "the package's files and modes");
}

#[tokio::test]
async fn the_control_fields_describe_the_package_issue_13() {
    let Some(deb) = deb("the_control_fields_describe_the_package") else {
        return;
    };
    let control = tool("dpkg-deb", &["-f", &deb.to_string_lossy()]).await;
    let field = |name: &str| {
        control
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} field in:\n{control}"))
            .to_owned()
    };
    let arch = tool("dpkg", &["--print-architecture"]).await;
    assert_eq!(field("Package"), "keyfed");
    // issue 13 (review): one version per commit, growing, so `apt install` of a newer build
    // upgrades; the file is named after it.
    let version = expected_version(&deb).await;
    assert_eq!(field("Version"), version);
    assert_eq!(
        deb.file_name().map(|n| n.to_string_lossy().into_owned()),
        Some(format!("keyfed_{version}_{}.deb", arch.trim()))
    );
    assert_eq!(field("Architecture"), arch.trim());
    assert_eq!(field("Section"), "admin");
    assert_eq!(field("Priority"), "optional");
    assert!(field("Depends").contains("libc6"), "{control}");
    let maintainer = field("Maintainer");
    assert!(
        maintainer.contains(" <") && maintainer.ends_with('>') && maintainer.contains('@'),
        "{maintainer}"
    );
    // The synopsis line is Cargo.toml's description, whole: cargo-deb cuts one longer than 79
    // characters and carries the rest into the extended description.
    assert_eq!(
        field("Description"),
        env!("CARGO_PKG_DESCRIPTION"),
        "the package's synopsis is cut: Cargo.toml's description must fit in 79 characters"
    );
    assert!(
        control.contains("\n keyfed gets OAuth 2.0 client-credentials tokens"),
        "no extended description:\n{control}"
    );
}

/// The package unpacked into a scratch root.
struct Unpacked {
    root: tempfile::TempDir,
}

impl Unpacked {
    async fn new(deb: &Path) -> Self {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        tool(
            "dpkg",
            &["-x", &deb.to_string_lossy(), &root.path().to_string_lossy()],
        )
        .await;
        Self { root }
    }

    fn path(&self, inside: &str) -> PathBuf {
        self.root.path().join(inside)
    }

    fn read(&self, inside: &str) -> Vec<u8> {
        std::fs::read(self.path(inside)).unwrap_or_else(|e| panic!("{inside}: {e}"))
    }

    /// Runs the package's keyfed (nothing configured, nothing secret).
    async fn keyfed(&self, args: &[&str]) -> crate::util::Run {
        let mut command = tokio::process::Command::new(self.path("usr/bin/keyfed"));
        command
            .args(args)
            .env_clear()
            .env("HOME", self.root.path())
            .current_dir(self.root.path());
        let what = format!("the package's keyfed {}", args.join(" "));
        process::run(&what, command, &Known::default(), Serves::Nothing).await
    }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("gzip: {e}"));
    let mut stdin = child
        .stdin
        .take()
        .unwrap_or_else(|| panic!("gzip: no stdin"));
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("gzip: {e}"));
    writer
        .join()
        .unwrap_or_else(|_| panic!("gzip: writer panicked"))
        .unwrap_or_else(|e| panic!("gzip: {e}"));
    assert!(output.status.success(), "gzip -dc failed");
    output.stdout
}

#[tokio::test]
async fn the_unpacked_package_is_the_repository_and_its_binary_issue_13() {
    let Some(deb) = deb("the_unpacked_package_is_the_repository_and_its_binary") else {
        return;
    };
    let unpacked = Unpacked::new(&deb).await;

    let version = unpacked.keyfed(&["--version"]).await;
    assert_eq!(version.ok().stdout.trim(), format!("keyfed {VERSION}"));
    // The package leaves the emulators out: its demo says so, as a usage error.
    let demo = unpacked.keyfed(&["demo", "--once"]).await;
    demo.fails_with(2);
    assert!(
        demo.stderr.contains("built without the demo's emulators")
            && demo.stderr.contains("cargo run --release -- demo"),
        "{}",
        demo.stderr
    );
    // issue 13 (review): … and is hidden from its help, page and completions.
    let help = unpacked.keyfed(&["--help"]).await;
    assert!(!help.ok().stdout.contains("demo"), "{}", help.stdout);

    for (inside, source) in installed_sources() {
        let source_bytes = std::fs::read(&source).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            unpacked.read(&inside) == source_bytes,
            "{inside} differs from {}",
            source.display()
        );
    }

    let page = gunzip(&unpacked.read("usr/share/man/man1/keyfed.1.gz"));
    let man = unpacked.keyfed(&["man"]).await;
    assert_eq!(
        String::from_utf8_lossy(&page),
        man.ok().stdout,
        "the man page is not `keyfed man`'s"
    );
    assert!(
        !String::from_utf8_lossy(&page).contains("demo"),
        "the packaged page names the demo"
    );
    let page_file = unpacked.path("keyfed.1");
    std::fs::write(&page_file, &page).unwrap_or_else(|e| panic!("{e}"));
    if let Some((warnings, text)) =
        render("the_unpacked_package_is_the_repository", &page_file).await
    {
        assert_eq!(warnings, "", "groff warned about the packaged page");
        assert!(
            strip_overstrike(&text).contains("keyfed credential-process"),
            "{text}"
        );
    }

    for (inside, shell) in [
        ("usr/share/bash-completion/completions/keyfed", "bash"),
        ("usr/share/zsh/vendor-completions/_keyfed", "zsh"),
        ("usr/share/fish/vendor_completions.d/keyfed.fish", "fish"),
    ] {
        let script = unpacked.keyfed(&["completions", shell]).await;
        let packaged = String::from_utf8_lossy(&unpacked.read(inside)).into_owned();
        assert_eq!(packaged, script.ok().stdout, "{inside}");
        assert!(packaged.contains("credential-process"), "{inside}");
        assert!(!packaged.contains("demo"), "{inside} completes the demo");
    }

    let changelog = String::from_utf8(gunzip(
        &unpacked.read("usr/share/doc/keyfed/changelog.Debian.gz"),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        changelog.starts_with(&format!("keyfed ({}) ", expected_version(&deb).await)),
        "{changelog}"
    );
}

#[tokio::test]
async fn the_maintainer_scripts_are_the_repositorys_issue_13() {
    let Some(deb) = deb("the_maintainer_scripts_are_the_repositorys") else {
        return;
    };
    let control = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    tool(
        "dpkg-deb",
        &[
            "-e",
            &deb.to_string_lossy(),
            &control.path().to_string_lossy(),
        ],
    )
    .await;
    let mut names: Vec<String> = std::fs::read_dir(control.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    // No conffiles: the package puts nothing in /etc; /etc/keyfed is made by tmpfiles.
    // md5sums: tests/package/build adds it (cargo-deb writes none).
    assert_eq!(names, ["control", "md5sums", "postinst", "postrm", "prerm"]);
    for script in ["postinst", "postrm", "prerm"] {
        use std::os::unix::fs::PermissionsExt as _;
        let packaged = control.path().join(script);
        let source = Path::new(REPO).join("systemd/deb").join(script);
        assert!(
            std::fs::read(&packaged).ok() == std::fs::read(&source).ok(),
            "{script} differs from {}",
            source.display()
        );
        let mode = std::fs::metadata(&packaged).map(|m| m.permissions().mode() & 0o7777);
        assert_eq!(mode.ok(), Some(0o755), "{script}");
    }

    // issue 13 (review): md5sums lists every file of the package with its sum, so dpkg
    // --verify and debsums can check an installed keyfed.
    let md5sums = std::fs::read_to_string(control.path().join("md5sums"))
        .unwrap_or_else(|e| panic!("md5sums: {e}"));
    let listed: BTreeMap<&str, &str> = md5sums
        .lines()
        .map(|line| {
            let (sum, path) = line
                .split_once("  ")
                .unwrap_or_else(|| panic!("md5sums: {line}"));
            (path, sum)
        })
        .collect();
    let unpacked = Unpacked::new(&deb).await;
    let files: Vec<String> = installed_sources()
        .into_iter()
        .map(|(path, _)| path)
        .chain(GENERATED.iter().map(|p| (*p).to_owned()))
        .collect();
    assert_eq!(
        listed
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        files.iter().map(String::as_str).collect(),
        "the files md5sums lists"
    );
    let paths: Vec<String> = files
        .iter()
        .map(|f| unpacked.path(f).to_string_lossy().into_owned())
        .collect();
    let args: Vec<&str> = paths.iter().map(String::as_str).collect();
    let sums = tool("md5sum", &args).await;
    for (line, file) in sums.lines().zip(&files) {
        let sum = line.split_whitespace().next().unwrap_or_default();
        assert_eq!(listed.get(file.as_str()), Some(&sum), "md5sums: {file}");
    }
    assert_eq!(sums.lines().count(), files.len(), "{sums}");
}

#[tokio::test]
async fn lintian_finds_nothing_issue_13() {
    let Some(deb) = deb("lintian_finds_nothing") else {
        return;
    };
    // Every tag lintian has: errors, warnings, informational (-I), pedantic and experimental
    // (-E) ones; overridden ones (each with its reason in the package's lintian-overrides) are
    // not shown, and an override that no longer matches is a tag of its own.
    let mut lintian = tokio::process::Command::new("lintian");
    lintian
        .args(["-I", "--pedantic", "-E", "--tag-display-limit", "0"])
        .arg(&deb);
    let run = process::run("lintian", lintian, &Known::default(), Serves::Nothing).await;
    let tags: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| matches!(l.get(..2), Some("E:" | "W:" | "I:" | "P:" | "X:")))
        .collect();
    assert!(tags.is_empty(), "lintian:\n{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.code,
        Some(0),
        "lintian:\n{}\n{}",
        run.stdout,
        run.stderr
    );
}
