//! Help, usage and offline error snapshots of the real binary (trycmd).
//! Regenerate after an intended change with `TRYCMD=overwrite cargo test -p kubectl-vc --test cli_snapshots`.

#[test]
fn cli_snapshots() {
    trycmd::TestCases::new()
        .register_bin(
            "kubectl-vc",
            std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-vc")),
        )
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("HOME", "/nonexistent")
        .case("tests/cmd/*.toml")
        .case("tests/cmd/*.md");
}
