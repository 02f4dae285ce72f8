use std::path::{Path, PathBuf};

use super::*;

fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[test]
fn flag_beats_environment_beats_default() {
    let env = env_of(&[("KEYFED_CONFIG", "/from/env.toml")]);
    assert_eq!(
        locate(Some(Path::new("/from/flag.toml")), &env, true),
        PathBuf::from("/from/flag.toml")
    );
    assert_eq!(locate(None, &env, true), PathBuf::from("/from/env.toml"));
    assert_eq!(
        locate(None, &env_of(&[]), true),
        PathBuf::from(SYSTEM_CONFIG)
    );
}

#[test]
fn a_user_config_is_used_only_by_non_root_and_only_when_present() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let home = dir.path().to_str().unwrap_or_default().to_owned();
    let env = move |name: &str| (name == "HOME").then(|| home.clone());
    assert_eq!(locate(None, &env, false), PathBuf::from(SYSTEM_CONFIG));
    let user = dir.path().join(".config/keyfed/keyfed.toml");
    std::fs::create_dir_all(user.parent().unwrap_or(dir.path())).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&user, "").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(locate(None, &env, false), user);
    assert_eq!(locate(None, &env, true), PathBuf::from(SYSTEM_CONFIG));
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("secret"), "s\n").unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("keyfed.toml");
    std::fs::write(
        &file,
        "[issuers.a]\nurl = \"https://sso.example.com/realms/r\"\nclient_id = \"c\"\nclient_secret_file = \"secret\"\n\
         [targets.t]\nissuer = \"a\"\naudience = \"x\"\nscope = [\"s1\", \"s2\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(
        dir.path().join("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let host = Host {
        hostname: "web-01".into(),
        is_root: true,
    };
    let config = load(&file, &|_| None, &host).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.issuers["a"].secret_source,
        SecretSource::File(dir.path().join("secret"))
    );
    assert_eq!(config.targets["t"].request.scope.as_deref(), Some("s1 s2"));
    // The secret file is 0644, so the loose mode is reported.
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("readable by group or others"))
    );
}
