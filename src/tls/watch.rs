//! Noticing that certificate files changed, without a signal: a Kubernetes Secret mounted
//! as a volume is rotated by swapping a symbolic link (`..data`) to a new directory, and
//! nothing tells the process. The supervisor asks a [`Watch`] every few seconds
//! ([`DEFAULT_CERT_CHECK`](crate::config::DEFAULT_CERT_CHECK)); it compares what `stat`
//! says of each file — following symbolic links, as a reload's `open` does — with what it
//! said last time.
//!
//! Why polling rather than inotify: a link swap changes no watched file's contents, so an
//! inotify watch must be on the directory and must follow the link itself; a few `stat`
//! calls every ten seconds cost nothing, work on every file system (a ConfigMap, NFS, a
//! plain directory), and need no dependency.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// What `stat` says of a file that changes when the file is replaced or rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// `None` when the file cannot be read (missing for a moment during an update).
    fn of(path: &PathBuf) -> Option<Stamp> {
        let m = fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// The stamps of a set of files, as last seen.
#[derive(Debug)]
pub struct Watch {
    files: Vec<PathBuf>,
    seen: Vec<Option<Stamp>>,
}

impl Watch {
    /// Watches `files`, as they are now.
    pub fn new(files: Vec<PathBuf>) -> Watch {
        let seen = files.iter().map(Stamp::of).collect();
        Watch { files, seen }
    }

    /// Whether any file changed since the last call (or since [`Watch::new`]); what is seen
    /// now becomes the reference either way, so one change is reported once. A reload that
    /// fails halfway through an update (the new certificate beside the old key) is tried
    /// again when the rest of the update lands, because that is a change too.
    pub fn changed(&mut self) -> bool {
        let now: Vec<Option<Stamp>> = self.files.iter().map(Stamp::of).collect();
        let changed = now != self.seen;
        self.seen = now;
        changed
    }

    /// Takes what is there now as seen: after a reload that the watch did not start
    /// (SIGHUP), so the same change does not reload twice.
    pub fn refresh(&mut self) {
        self.changed();
    }

    /// Whether there is anything to watch (a self-signed certificate has no file).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rewriting a file, replacing it by a rename (what a Secret update does through its
    /// link), and removing it are each one change, reported once.
    #[test]
    fn changes_are_reported_once() {
        let dir = std::env::temp_dir().join(format!("loopd-watch-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cert.pem");
        fs::write(&file, "one").unwrap();
        let mut watch = Watch::new(vec![file.clone()]);
        assert!(!watch.changed());
        fs::write(&file, "two, longer").unwrap();
        assert!(watch.changed());
        assert!(!watch.changed());
        let next = dir.join("next.pem");
        fs::write(&next, "three").unwrap();
        fs::rename(&next, &file).unwrap();
        assert!(watch.changed(), "a new inode");
        fs::remove_file(&file).unwrap();
        assert!(watch.changed());
        assert!(!watch.changed());
        fs::remove_dir_all(&dir).unwrap();
    }
}
