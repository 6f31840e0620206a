//! Finds the workspace's `warren` binary for tests, building it if needed. Shared by
//! `tests/binary` and `tests/cli_support`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The `warren` binary: `$WARREN_BIN` if set, else built (once per test process) by the same
/// cargo that runs the tests, into the tests' own target directory and profile.
/// `CARGO_BIN_EXE_warren` only exists for binaries of the tests' own package, and the binary
/// lives in warren-cli.
pub fn warren_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("WARREN_BIN") {
            return PathBuf::from(path);
        }
        // The test executable is target/<profile>/deps/NAME-HASH.
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable under target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target directory");
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("profile directory name");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build
            .args(["build", "--quiet", "-p", "warren-cli", "--bin", "warren"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", target_dir);
        // Cargo gives a test the variables of the package under test; build scripts that
        // watch them (ring's watches CARGO_MANIFEST_DIR) would otherwise see them change
        // between this build and the outer `cargo test`, and rebuild half the tree each
        // time (about 30 s per test binary).
        for (key, _) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_BIN_EXE_")
                || matches!(
                    key,
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "CARGO_RUSTC_CURRENT_DIR"
                )
            {
                build.env_remove(key);
            }
        }
        if profile != "debug" {
            build.args(["--profile", profile]);
        }
        let out = build.output().expect("running cargo build");
        assert!(
            out.status.success(),
            "cargo build -p warren-cli failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir.join(format!("warren{}", std::env::consts::EXE_SUFFIX))
    })
}
