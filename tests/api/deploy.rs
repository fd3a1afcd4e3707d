//! The systemd units in `deploy/` are valid, as `systemd-analyze verify` checks them (when
//! the machine has it), with their `ExecStart=` pointing at the built binary.

use std::path::Path;

#[test]
fn the_systemd_units_verify() {
    let Ok(output) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    };
    assert!(output.status.success());
    let dir = tempfile::tempdir().expect("dir");
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    for unit in ["litejobs.service", "litejobs-agent.service"] {
        let text = std::fs::read_to_string(deploy.join(unit)).expect("unit");
        let text = text.replace("/usr/local/bin/litejobs", env!("CARGO_BIN_EXE_litejobs"));
        let path = dir.path().join(unit);
        std::fs::write(&path, text).expect("write");
        let verified = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .expect("systemd-analyze runs");
        let stderr = String::from_utf8_lossy(&verified.stderr);
        // Complaints about this machine rather than the unit (no systemd running here)
        // are not the unit's.
        let about_the_unit: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(unit))
            .filter(|l| !l.contains("Failed to connect") && !l.contains("not a directory"))
            .collect();
        assert!(
            verified.status.success() || about_the_unit.is_empty(),
            "{unit}:\n{stderr}"
        );
        assert!(about_the_unit.is_empty(), "{unit}:\n{stderr}");
    }
}
