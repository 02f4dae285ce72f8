//! `--format shell`: a bash script of `kcadm.sh` commands that sets up the client and the named
//! target's client scope. It finds both by name and updates them, or creates them, so it can be
//! run again, and once per target of the client. The JSON bodies sit in quoted here-documents,
//! exactly as keyfed wrote them; the client secret is read at run time from where keyfed reads
//! it and reaches `kcadm.sh` on standard input only, never its command line.

use std::fmt::Write as _;

use super::json;
use super::plan::{Credential, INLINE_SECRET_VARIABLE, Plan, Scope, SecretFrom};
use keyfed_core::quote::sh;

/// The script for `plan`'s named target (its scope is the plan's first).
pub fn render(plan: &Plan, config_file: &std::path::Path) -> String {
    let mut out = String::new();
    let Some(scope) = plan.scopes.first() else {
        return out;
    };
    header(&mut out, plan, scope);
    out.push_str("set -euo pipefail\n\n");
    if let Credential::Secret { from, .. } = &plan.client.credential {
        secret(&mut out, from, config_file);
    }
    let _ = writeln!(out, "realm={}", sh(&plan.realm));
    let _ = writeln!(out, "client_id={}", sh(&plan.client.client_id));
    let _ = writeln!(out, "scope={}", sh(&scope.name));
    out.push('\n');
    body(&mut out, "client", &json::client(plan));
    body(&mut out, "mapper", &json::mapper(scope));
    body(&mut out, "new_scope", &json::scope_with_mapper(scope));
    client_steps(&mut out, &plan.client.credential);
    scope_steps(&mut out);
    link_step(&mut out, scope);
    out
}

/// What the script does and how to run it. Every value from the configuration is written as a
/// JSON string, so none can end the comment.
fn header(out: &mut String, plan: &Plan, scope: &Scope) {
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let link = if scope.optional {
        "an Optional scope (the target requests it)"
    } else {
        "a Default scope (the target requests none:\n#   every token of the client carries it)"
    };
    let _ = write!(
        out,
        "#!/usr/bin/env bash\n\
         # The Keycloak side of keyfed's target {target}, printed by\n\
         # `keyfed trust {target_word} --keycloak`. In realm {realm} of {server}:\n\
         # - client {client}: confidential ({authenticator}, for keyfed's auth = {method}),\n\
         #   service accounts on, standard flow, implicit flow and direct access grants off,\n\
         #   full scope off, access tokens signed {alg} and living {lifespan} s:\n\
         #   {reason};\n\
         # - client scope {scope}: an audience mapper putting {audience}\n\
         #   in the aud of access tokens, linked to the client as {link}.\n\
         #\n\
         # Run it with kcadm.sh (Keycloak's bin/) on PATH, logged in as an admin of the realm:\n\
         #   kcadm.sh config credentials --server {server_word} --realm master --user admin\n\
         # It finds the client and the scope by name and updates them, or creates them: run it\n\
         # again at will, and for each target of the client. Then check with\n\
         #   keyfed doctor {target_word}\n\
         # or keyfed token {target_word} --decode (aud must be {audience} alone).\n\n",
        target = q(&plan.target),
        target_word = sh(&plan.target),
        realm = q(&plan.realm),
        server = q(&plan.server),
        server_word = sh(&plan.server),
        client = q(&plan.client.client_id),
        authenticator = plan.client.credential.authenticator(),
        method = plan.client.method,
        alg = super::plan::TOKEN_ALGORITHM,
        lifespan = plan.lifespan.value.as_secs(),
        reason = plan.lifespan.reason.replace(['\n', '\r'], " "),
        scope = q(&scope.name),
        audience = q(&scope.audience),
    );
}

/// Reads the client secret from where keyfed reads it, as keyfed reads it, and makes it a JSON
/// string for the client's body.
fn secret(out: &mut String, from: &SecretFrom, config_file: &std::path::Path) {
    match from {
        SecretFrom::File(path) => {
            let _ = write!(
                out,
                "# The client secret, from the file keyfed reads, as keyfed reads it (one trailing\n\
                 # newline is not part of it).\n\
                 secret=$(cat -- {path} && printf x)\n\
                 secret=${{secret%x}}\n\
                 case $secret in *$'\\n') secret=${{secret%$'\\n'}}; secret=${{secret%$'\\r'}} ;; esac\n",
                path = sh(&path.to_string_lossy()),
            );
        }
        SecretFrom::Env(name) => {
            let _ = write!(
                out,
                "# The client secret, from the environment variable keyfed reads.\n\
                 secret=$(printenv -- {name} || true)\n\
                 if [ -z \"$secret\" ]; then\n  \
                   echo {missing} >&2\n  \
                   exit 1\n\
                 fi\n",
                name = sh(name),
                missing = sh(&format!("set {name} to the client secret, as for keyfed")),
            );
        }
        SecretFrom::Inline => {
            let _ = write!(
                out,
                "# The client secret is written inline in keyfed's configuration: pass it in {var}.\n\
                 secret=$(printenv {var} || true)\n\
                 if [ -z \"$secret\" ]; then\n  \
                   echo {missing} >&2\n  \
                   exit 1\n\
                 fi\n",
                var = INLINE_SECRET_VARIABLE,
                missing = sh(&format!(
                    "set {INLINE_SECRET_VARIABLE} to the client secret written in {}",
                    config_file.display()
                )),
            );
        }
    }
    out.push_str(SECRET_AS_JSON);
}

/// The secret as a JSON string: `\` and `"` escaped; a control character refused.
const SECRET_AS_JSON: &str = r#"case $secret in *[[:cntrl:]]*)
  echo 'the client secret holds a control character, which this script cannot pass on: set it in the admin console (Clients, the client, Credentials)' >&2
  exit 1 ;;
esac
secret_json=${secret//\\/\\\\}
secret_json=\"${secret_json//\"/\\\"}\"

"#;

/// `name`, read from a quoted here-document holding `value` as pretty JSON.
fn body(out: &mut String, name: &str, value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let _ = write!(
        out,
        "IFS= read -r -d '' {name} <<'JSON' || true\n{text}\nJSON\n\n"
    );
}

/// Creates the client, or updates the one of that name.
fn client_steps(out: &mut String, credential: &Credential) {
    if matches!(credential, Credential::Secret { .. }) {
        out.push_str(SECRET_INTO_BODY);
    }
    out.push_str(CLIENT_STEPS);
}

/// The secret goes into the client's body, so it reaches kcadm.sh on standard input.
const SECRET_INTO_BODY: &str = r#"# The secret joins the body on kcadm.sh's standard input, not its command line.
client="{\"secret\": $secret_json, ${client#\{}"

"#;

const CLIENT_STEPS: &str = r#"id=$(kcadm.sh get clients -r "$realm" -q clientId="$client_id" --fields id --format csv --noquotes)
if [ -n "$id" ]; then
  kcadm.sh update "clients/$id" -r "$realm" -m -f - <<<"$client"
  printf 'client %s: updated\n' "$client_id"
else
  id=$(kcadm.sh create clients -r "$realm" -i -f - <<<"$client")
  printf 'client %s: created\n' "$client_id"
fi

"#;

/// Creates the scope with its mapper, or updates the audience mapper of the scope of that name
/// (the scope's own settings do not matter to keyfed: a scope made by hand is kept as it is).
fn scope_steps(out: &mut String) {
    out.push_str(SCOPE_STEPS);
}

const SCOPE_STEPS: &str = r#"scope_id=
scope_existed=no
scopes=$(kcadm.sh get client-scopes -r "$realm" --fields id,name --format csv --noquotes)
while IFS=, read -r one_id one_name; do
  if [ "$one_name" = "$scope" ]; then scope_id=$one_id; scope_existed=yes; fi
done <<<"$scopes"
if [ -n "$scope_id" ]; then
  mappers=$(kcadm.sh get "client-scopes/$scope_id/protocol-mappers/models" -r "$realm" --fields id,protocolMapper --format csv --noquotes)
  mapper_id=
  while IFS=, read -r one_id one_type; do
    if [ "$one_type" != oidc-audience-mapper ]; then continue; fi
    if [ -z "$mapper_id" ]; then
      mapper_id=$one_id
    else
      printf 'note: client scope %s has another audience mapper (%s): its audience joins the aud of the same tokens\n' "$scope" "$one_id" >&2
    fi
  done <<<"$mappers"
  if [ -n "$mapper_id" ]; then
    kcadm.sh update "client-scopes/$scope_id/protocol-mappers/models/$mapper_id" -r "$realm" -m -f - <<<"$mapper"
  else
    kcadm.sh create "client-scopes/$scope_id/protocol-mappers/models" -r "$realm" -f - <<<"$mapper"
  fi
  printf 'client scope %s: updated\n' "$scope"
else
  scope_id=$(kcadm.sh create client-scopes -r "$realm" -i -f - <<<"$new_scope")
  printf 'client scope %s: created\n' "$scope"
fi

"#;

/// Links the scope to the client: Optional when the target requests it, else Default. A scope
/// that existed may be linked the other way, which Keycloak keeps when asked for this one, so
/// that link goes first (removing a link that is not there does nothing).
fn link_step(out: &mut String, scope: &Scope) {
    let (kind, other, described) = if scope.optional {
        ("optional", "default", "an Optional")
    } else {
        ("default", "optional", "a Default")
    };
    out.push_str(
        &LINK_STEP
            .replace("{kind}", kind)
            .replace("{other}", other)
            .replace("{described}", described),
    );
}

const LINK_STEP: &str = r#"if [ "$scope_existed" = yes ]; then
  kcadm.sh delete "clients/$id/{other}-client-scopes/$scope_id" -r "$realm"
fi
kcadm.sh update "clients/$id/{kind}-client-scopes/$scope_id" -r "$realm"
printf 'client scope %s: linked to client %s as {described} scope\n' "$scope" "$client_id"
"#;
