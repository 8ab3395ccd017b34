//! A pod's token volume on the node: a tmpfs at the kubelet's target path
//! (the token never touches the node's disk), files replaced atomically as
//! the kubelet replaces a projected volume's: a new timestamped directory,
//! then one rename of the `..data` symlink to point at it.
//!
//! ```text
//! target/
//!   ..2026_12_08_10_15_02.123456789/access_token ...
//!   ..data -> ..2026_12_08_10_15_02.123456789
//!   access_token -> ..data/access_token
//! ```

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::mount::{MountFlags, UnmountFlags};

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Whether `path` is a mount point: its device differs from its parent's.
pub fn is_mount(path: &Path) -> io::Result<bool> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    match std::fs::metadata(path) {
        Ok(meta) => Ok(meta.dev() != std::fs::metadata(parent)?.dev()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Mounts a small tmpfs at `target` (created if missing): no devices, no
/// set-uid, nothing executable.
pub fn mount_tmpfs(target: &Path) -> io::Result<()> {
    std::fs::create_dir_all(target)?;
    rustix::mount::mount(
        "smartbackend-token",
        target,
        "tmpfs",
        MountFlags::NODEV | MountFlags::NOSUID | MountFlags::NOEXEC,
        // 1 MiB: far more than any token the operator accepts.
        Some(c"mode=0755,size=1m"),
    )
    .map_err(io::Error::from)
}

/// Unmounts `target` if it is a mount, then removes the directory.
pub fn unmount(target: &Path) -> io::Result<()> {
    if is_mount(target)? {
        rustix::mount::unmount(target, UnmountFlags::empty()).map_err(io::Error::from)?;
    }
    match std::fs::remove_dir(target) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Replaces the files in `dir` with `files` at once: a reader sees either
/// every old file or every new one. Files are readable by any user of the
/// pod (the pod's own volume), writable by none.
pub fn write_atomically(dir: &Path, files: &[(&str, String)], stamp: &str) -> io::Result<()> {
    let version = format!("..{stamp}");
    let staged = dir.join(&version);
    if staged.exists() {
        std::fs::remove_dir_all(&staged)?;
    }
    std::fs::create_dir(&staged)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))?;
    for (name, content) in files {
        let path = staged.join(name);
        std::fs::write(&path, content)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))?;
    }
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA))?;
    // The names the pod reads, each through ..data: made once, and removed
    // when the new version no longer has them (a scope the server stopped
    // stating).
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA).join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let keep = name == DATA || name == version || files.iter().any(|(n, _)| *n == name);
        if keep {
            continue;
        }
        // Earlier versions are the other `..` directories.
        if name.starts_with("..") && entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else if entry.file_type()?.is_symlink() {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    #[test]
    fn replaces_every_file_through_one_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let first = vec![
            ("access_token", "one".to_string()),
            ("scope", "s".to_string()),
        ];
        write_atomically(dir.path(), &first, "1").unwrap();
        assert_eq!(read(dir.path(), "access_token"), "one");
        assert_eq!(
            std::fs::read_link(dir.path().join("access_token")).unwrap(),
            Path::new("..data/access_token")
        );
        let second = vec![("access_token", "two".to_string())];
        write_atomically(dir.path(), &second, "2").unwrap();
        assert_eq!(read(dir.path(), "access_token"), "two");
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["..2", "..data", "access_token"],
            "the old version and the dropped name are gone"
        );
        let mode = std::fs::metadata(dir.path().join("..2/access_token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
    }

    #[test]
    fn a_missing_path_is_not_a_mount() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount(&dir.path().join("absent")).unwrap());
        assert!(!is_mount(dir.path()).unwrap());
    }
}
