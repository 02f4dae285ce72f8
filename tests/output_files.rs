//! The files keyfed writes, as an attacker on a shared host would try them (issue 7): a keyfed
//! running as root merges one profile into a user's own `~/.aws/credentials` (`owner` set) and
//! must neither follow the user's links nor hang on the user's lock file; folders it creates
//! keep the output's group under the unit's `UMask=0077`; temporary files of interrupted writes
//! do not pile up beside the outputs.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::{Fixture, Run, as_root_or_skip, wait_until};

/// The unprivileged user owning the home folder merged into.
const USER: u32 = 65534;
/// Another unprivileged uid.
const STRANGER: u32 = 1234;

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn mkdir(path: &Path, owner: u32) {
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    crate::util::set_mode(path, 0o755);
    chown(path, owner);
}

/// Writes `content` to `path`, 0600 and owned by `owner`.
fn file(path: &Path, content: &str, owner: u32) {
    std::fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    crate::util::set_mode(path, 0o600);
    chown(path, owner);
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("{e}"))
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Asserts no regular file in `dir` holds `text`.
fn nowhere_in(dir: &Path, text: &str) {
    for name in names(dir) {
        let path = dir.join(&name);
        let meta = std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{e}"));
        if meta.is_file() {
            assert!(
                !read(&path).contains(text),
                "{} holds content it must not",
                path.display()
            );
        }
    }
}

/// Takes the merge lock of `aws/credentials` in folder `aws` as another process would, owned
/// by the user; held until the returned file is dropped.
fn hold_merge_lock(aws: &Path) -> std::fs::File {
    let lock_path = aws.join(".credentials.keyfed-lock");
    file(&lock_path, "", USER);
    let lock = std::fs::File::open(&lock_path).unwrap_or_else(|e| panic!("{e}"));
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .unwrap_or_else(|e| panic!("flock: {e}"));
    lock
}

/// The user's home with `.aws` (both owned by [`USER`]), and the folder `.aws`.
fn home(fx: &Fixture) -> PathBuf {
    mkdir(&fx.path("home"), USER);
    mkdir(&fx.path("home/.aws"), USER);
    fx.path("home/.aws")
}

/// A target "aws" merging into the user's `~/.aws/credentials` as that user, plus `extra`
/// outputs.
fn merge_config(fx: &Fixture, extra: &str) {
    fx.daemon_config(&fx.aws_target(
        "aws",
        &format!(
            r#"{{ kind = "aws-credentials", path = "home/.aws/credentials", profile = "default", merge = true, owner = "{USER}" }}{extra}"#
        ),
    ));
}

/// `keyfed once`, failing the test if it does not finish: a hang is the defect.
async fn once(fx: &Fixture) -> Run {
    tokio::time::timeout(Duration::from_secs(60), fx.keyfed(&["once"]))
        .await
        .unwrap_or_else(|_| panic!("keyfed once hung"))
}

const HERS: &str = "[other]\naws_access_key_id = AKIAHERS\naws_secret_access_key = hers\n";

#[tokio::test]
async fn issue7_merge_refuses_a_symlinked_credentials_file() {
    if !as_root_or_skip("issue7_merge_refuses_a_symlinked_credentials_file") {
        return;
    }
    let fx = Fixture::aws().await;
    let aws = home(&fx);
    let shadow = "root:$6$not-for-alice$:19000:0:99999:7:::\n";
    file(&fx.path("root-only"), shadow, 0);
    std::os::unix::fs::symlink(fx.path("root-only"), aws.join("credentials"))
        .unwrap_or_else(|e| panic!("{e}"));
    chown(&aws.join("credentials"), USER);
    merge_config(&fx, "");
    once(&fx)
        .await
        .fails_with(1)
        .says("home/.aws/credentials is a symbolic link");
    assert_eq!(names(&aws), ["credentials"], "nothing is written beside it");
    assert!(aws.join("credentials").is_symlink());
    assert_eq!(read(&fx.path("root-only")), shadow);
    nowhere_in(&aws, "not-for-alice");
}

#[tokio::test]
async fn issue7_merge_refuses_a_symlinked_folder() {
    if !as_root_or_skip("issue7_merge_refuses_a_symlinked_folder") {
        return;
    }
    let fx = Fixture::aws().await;
    mkdir(&fx.path("home"), USER);
    let elsewhere = fx.path("elsewhere");
    mkdir(&elsewhere, USER);
    file(&elsewhere.join("credentials"), HERS, USER);
    std::os::unix::fs::symlink(&elsewhere, fx.path("home/.aws")).unwrap_or_else(|e| panic!("{e}"));
    chown(&fx.path("home/.aws"), USER);
    merge_config(&fx, "");
    once(&fx)
        .await
        .fails_with(1)
        .says("home/.aws is a symbolic link");
    assert_eq!(
        names(&elsewhere),
        ["credentials"],
        "nothing is written there"
    );
    assert_eq!(read(&elsewhere.join("credentials")), HERS);
}

#[tokio::test]
async fn issue7_merge_refuses_a_hard_linked_file() {
    if !as_root_or_skip("issue7_merge_refuses_a_hard_linked_file") {
        return;
    }
    let fx = Fixture::aws().await;
    let aws = home(&fx);
    file(&aws.join("credentials"), HERS, USER);
    std::fs::hard_link(aws.join("credentials"), aws.join("backup"))
        .unwrap_or_else(|e| panic!("{e}"));
    merge_config(&fx, "");
    once(&fx)
        .await
        .fails_with(1)
        .says("home/.aws/credentials has 2 hard links");
    assert_eq!(names(&aws), ["backup", "credentials"]);
    assert_eq!(read(&aws.join("credentials")), HERS);
}

#[tokio::test]
async fn issue7_merge_refuses_a_file_owned_by_someone_else() {
    if !as_root_or_skip("issue7_merge_refuses_a_file_owned_by_someone_else") {
        return;
    }
    let fx = Fixture::aws().await;
    let aws = home(&fx);
    file(&aws.join("credentials"), HERS, STRANGER);
    merge_config(&fx, "");
    once(&fx).await.fails_with(1).says(&format!(
        "home/.aws/credentials is owned by uid {STRANGER}, expected {USER}"
    ));
    assert_eq!(names(&aws), ["credentials"]);
    assert_eq!(read(&aws.join("credentials")), HERS);
}

#[tokio::test]
async fn issue7_merge_refuses_a_folder_owned_by_someone_else() {
    if !as_root_or_skip("issue7_merge_refuses_a_folder_owned_by_someone_else") {
        return;
    }
    let fx = Fixture::aws().await;
    let aws = home(&fx);
    chown(&aws, STRANGER);
    merge_config(&fx, "");
    once(&fx).await.fails_with(1).says(&format!(
        "home/.aws is owned by uid {STRANGER}, expected {USER} or root"
    ));
    assert!(names(&aws).is_empty());
}

#[tokio::test]
async fn issue7_a_fifo_as_lock_file_fails_the_merge_without_hanging() {
    if !as_root_or_skip("issue7_a_fifo_as_lock_file_fails_the_merge_without_hanging") {
        return;
    }
    let fx = Fixture::aws().await;
    let aws = home(&fx);
    file(&aws.join("credentials"), HERS, USER);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        aws.join(".credentials.keyfed-lock"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap_or_else(|e| panic!("mkfifo: {e}"));
    chown(&aws.join(".credentials.keyfed-lock"), USER);
    merge_config(&fx, "");
    once(&fx)
        .await
        .fails_with(1)
        .says("home/.aws/.credentials.keyfed-lock is not a regular file");
    assert_eq!(read(&aws.join("credentials")), HERS);
}

#[tokio::test]
async fn issue7_a_held_lock_fails_the_merge_and_other_outputs_are_written() {
    if !as_root_or_skip("issue7_a_held_lock_fails_the_merge_and_other_outputs_are_written") {
        return;
    }
    let fx = Fixture::aws().await;
    let aws = home(&fx);
    file(&aws.join("credentials"), HERS, USER);
    let lock = hold_merge_lock(&aws);
    merge_config(
        &fx,
        r#", { kind = "credential-process-json", path = "out/process.json" }"#,
    );
    once(&fx)
        .await
        .fails_with(1)
        .says("the lock ")
        .says("home/.aws/.credentials.keyfed-lock is held by another process");
    assert_eq!(read(&aws.join("credentials")), HERS);
    let doc: serde_json::Value =
        serde_json::from_str(&read(&fx.path("out/process.json"))).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        doc["AccessKeyId"]
            .as_str()
            .is_some_and(|k| k.starts_with("ASIA"))
    );

    // Released, the next run merges.
    drop(lock);
    once(&fx).await.ok();
    assert!(read(&aws.join("credentials")).starts_with(HERS));
}

/// Issue 7, defect 3, through the daemon: while another process holds the merge lock, the
/// refresh completes, the faces serve, and `keyfed status` names the one output that failed.
#[tokio::test]
async fn issue7_a_held_lock_fails_one_output_of_the_daemon_and_nothing_else() {
    if !as_root_or_skip("issue7_a_held_lock_fails_one_output_of_the_daemon_and_nothing_else") {
        return;
    }
    let fx = Fixture::aws().await;
    let aws = home(&fx);
    file(&aws.join("credentials"), HERS, USER);
    let lock = hold_merge_lock(&aws);
    let base = fx.endpoint_config("", "");
    let config = std::fs::read_to_string(fx.path("keyfed.toml")).unwrap_or_default();
    fx.write(
        "keyfed.toml",
        &config.replace(
            "outputs = []",
            &format!(
                r#"outputs = [{{ kind = "aws-credentials", path = "home/.aws/credentials", merge = true, owner = "{USER}" }}, {{ kind = "credential-process-json", path = "out/process.json" }}]"#
            ),
        ),
    );
    let daemon = fx.daemon().await;
    crate::util::http::wait_ready(&base).await;
    let (status, _) = crate::util::users::curl_as(
        0,
        0,
        &[
            "-H",
            &format!("Authorization: {}", fx.container_token()),
            &format!("{base}/aws/app"),
        ],
    )
    .await;
    assert_eq!(status, "200", "the container face serves");
    let out = fx.path("out/process.json");
    wait_until("the other output written", async || {
        std::fs::read_to_string(&out).is_ok_and(|w| w.contains("ASIA"))
    })
    .await;
    wait_until("status naming the failed output", async || {
        fx.status_json()
            .await
            .to_string()
            .contains("is held by another process")
    })
    .await;
    assert_eq!(read(&aws.join("credentials")), HERS);
    drop(lock);
    daemon.stop().await;
}

/// The merge that works: the user's file, as the user, every other byte kept; group and other
/// access dropped; temporary files of interrupted writes (as if from SIGKILLed runs) removed.
#[tokio::test]
async fn issue7_merge_as_the_user_drops_group_access_and_stale_temporary_files() {
    if !as_root_or_skip("issue7_merge_as_the_user_drops_group_access_and_stale_temporary_files") {
        return;
    }
    let fx = Fixture::aws().await;
    let aws = home(&fx);
    file(&aws.join("credentials"), HERS, USER);
    // A primary group shared with other users could read it.
    crate::util::set_mode(&aws.join("credentials"), 0o640);
    let stale = [
        ".credentials.keyfed-tmp-0123456789abcdef",
        ".credentials.keyfed-tmp-fedcba9876543210",
    ];
    file(
        &aws.join(stale[0]),
        "[default]\naws_secret_access_key = live\n",
        USER,
    );
    file(
        &aws.join(stale[1]),
        "[default]\naws_secret_access_key = live\n",
        0,
    );
    for name in stale {
        crate::util::backdate(&aws.join(name));
    }
    let look_alike = ".credentials.keyfed-tmp-mine";
    file(&aws.join(look_alike), "", USER);
    merge_config(&fx, "");
    once(&fx).await.ok();

    let merged = aws.join("credentials");
    let text = read(&merged);
    assert!(text.starts_with(HERS), "{text}");
    assert!(
        text.contains("\n[default]\naws_access_key_id = ASIA"),
        "{text}"
    );
    let meta = std::fs::metadata(&merged).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(meta.uid(), USER);
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "a merged file loses the group's access"
    );
    for name in stale {
        assert!(!aws.join(name).exists(), "{name} was removed");
    }
    assert!(aws.join(look_alike).exists(), "a look-alike name is kept");
    let lock = std::fs::symlink_metadata(aws.join(".credentials.keyfed-lock"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(lock.is_file());
    assert_eq!(lock.uid(), USER, "the lock file is the user's");
}

/// Runs `keyfed --config … ARGS` under `umask 077`, as the shipped unit's `UMask=0077` does.
async fn keyfed_under_umask_077(fx: &Fixture, args: &[&str]) -> Run {
    fx.keyfed_behind(
        &["/bin/sh", "-c", "umask 077 && exec \"$0\" \"$@\""],
        args,
        &[],
    )
    .await
}

#[tokio::test]
async fn issue7_created_folders_keep_the_group_under_umask_077() {
    if !as_root_or_skip("issue7_created_folders_keep_the_group_under_umask_077") {
        return;
    }
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target(
        "aws",
        r#"{ kind = "credential-process-json", path = "shared/app/process.json", group = "65534", mode = "0640" },
           { kind = "credential-process-json", path = "private/process.json" }"#,
    ));
    // An existing folder keeps its mode: keyfed changes only folders it creates.
    std::fs::create_dir(fx.path("private")).unwrap_or_else(|e| panic!("{e}"));
    crate::util::set_mode(&fx.path("private"), 0o711);
    keyfed_under_umask_077(&fx, &["once"]).await.ok();
    let own = std::fs::metadata(fx.path("shared/app")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(own.permissions().mode() & 0o7777, 0o750);
    assert_eq!(
        own.gid(),
        65534,
        "the output's folder has the output's group"
    );
    // A folder above it stays keyfed's own, traversable: whoever gets it decides where the
    // outputs below it land.
    let above = std::fs::metadata(fx.path("shared")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(above.permissions().mode() & 0o7777, 0o711);
    assert_eq!((above.uid(), above.gid()), (0, 0));
    let meta =
        std::fs::metadata(fx.path("shared/app/process.json")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(meta.gid(), 65534);
    let private = std::fs::metadata(fx.path("private")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(private.permissions().mode() & 0o7777, 0o711);
}

/// Issue 7 review: with outputs of two owners under one missing folder, that folder is not given
/// to either — else one user could swap the other's folder for one of their own.
#[tokio::test]
async fn issue7_a_shared_parent_folder_belongs_to_no_output_owner() {
    if !as_root_or_skip("issue7_a_shared_parent_folder_belongs_to_no_output_owner") {
        return;
    }
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target(
        "aws",
        r#"{ kind = "credential-process-json", path = "x/a/f.json", owner = "65534" },
           { kind = "credential-process-json", path = "x/b/f.json", owner = "1234" }"#,
    ));
    fx.keyfed(&["once"]).await.ok();
    let owner = |p: &str| std::fs::metadata(fx.path(p)).map(|m| m.uid()).ok();
    assert_eq!(owner("x"), Some(0));
    assert_eq!(owner("x/a"), Some(65534));
    assert_eq!(owner("x/b"), Some(1234));
    assert_eq!(owner("x/a/f.json"), Some(65534));
}

#[tokio::test]
async fn issue7_temporary_files_of_interrupted_writes_are_removed() {
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target(
        "aws",
        r#"{ kind = "credential-process-json", path = "out/process.json" }"#,
    ));
    std::fs::create_dir(fx.path("out")).unwrap_or_else(|e| panic!("{e}"));
    // As left by two SIGKILLed runs, holding live credentials.
    let stale = [
        "out/.process.json.keyfed-tmp-0123456789abcdef",
        "out/.process.json.keyfed-tmp-89abcdef01234567",
    ];
    for name in stale {
        crate::util::backdate(&fx.write(name, "{\"SecretAccessKey\":\"live\"}"));
    }
    // Not keyfed's pattern for this output: kept.
    let kept = [
        "out/.process.json.keyfed-tmp-0123",
        "out/process.json.keyfed-tmp-0123456789abcdef",
        "out/.other.json.keyfed-tmp-0123456789abcdef",
    ];
    for name in kept {
        fx.write(name, "mine");
    }
    fx.keyfed(&["once"]).await.ok();
    for name in stale {
        assert!(!fx.path(name).exists(), "{name} was removed");
    }
    for name in kept {
        assert_eq!(read(&fx.path(name)), "mine", "{name} was kept");
    }
    assert!(fx.path("out/process.json").exists());
}

/// A missing `~/.aws` is created for the user (whose file it will hold), private to them.
#[tokio::test]
async fn a_missing_aws_folder_is_created_for_the_output_owner() {
    if !as_root_or_skip("a_missing_aws_folder_is_created_for_the_output_owner") {
        return;
    }
    let fx = Fixture::aws().await;
    mkdir(&fx.path("home"), USER);
    merge_config(&fx, "");
    keyfed_under_umask_077(&fx, &["once"]).await.ok();
    let aws = std::fs::metadata(fx.path("home/.aws")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(aws.uid(), USER);
    assert_eq!(aws.permissions().mode() & 0o7777, 0o700);
    let file =
        std::fs::metadata(fx.path("home/.aws/credentials")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file.uid(), USER);
    assert_eq!(file.permissions().mode() & 0o777, 0o600);
    assert!(
        read(&fx.path("home/.aws/credentials")).starts_with("[default]\naws_access_key_id = ASIA")
    );
}
