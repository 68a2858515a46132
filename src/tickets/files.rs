//! File helpers of the journal: private directories and files (0700,
//! 0600), I/O errors with their path, and the owner lock file that marks
//! this process's open sessions as alive.

use super::{JournalError, Result};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and missing parents) with mode 0700.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(io_err(dir))
}

/// Opens `path` for writing, creating it with mode 0600 if missing. An
/// existing file readable by group or others is tightened to 0600.
pub(crate) fn private_file(path: &Path, create_new: bool) -> Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if create_new {
        o.create_new(true);
    } else {
        o.create(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let f = o.open(path).map_err(io_err(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = f.metadata().map_err(io_err(path))?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "tightening permissions to 0600");
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io_err(path))?;
        }
    }
    Ok(f)
}

pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// The process-wide lock that marks this process's open sessions as alive.
pub(crate) struct OwnerLock {
    pub(crate) id: String,
    pub(crate) path: PathBuf,
    pub(crate) _file: File,
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
