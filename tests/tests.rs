//! keyfed's integration tests: the real `keyfed` binary against in-process emulators, checked
//! through its exit status, output and files. One test binary; one module per story.

mod util;

mod aws_daemon;
mod azure_faces;
mod config_check;
mod corporate_network;
mod crash_safety;
mod demo;
mod doctor;
mod endpoint;
mod endpoint_abuse;
mod endpoint_guard;
mod examples;
mod exec_env;
mod faults;
mod gce_face;
mod gcp_interop;
mod interop;
mod interop_node;
mod keycloak_rotation;
mod keycloak_server;
mod keycloak_setup;
mod leak_check;
mod logging;
mod manual;
mod non_dumpable;
mod output_files;
mod package;
mod secret_hygiene;
mod single_flight;
mod stopped_targets;
mod systemd_boot;
mod systemd_notify;
mod systemd_unit;
mod token_auth;
mod token_checks;
mod token_errors;
mod trust;
mod unit_sandbox;
mod upstream_http;
