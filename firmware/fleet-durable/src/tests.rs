use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;

use proptest::prelude::*;

use super::*;

fn names(dir: &Path) -> Vec<OsString> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    v.sort();
    v
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).expect("meta").permissions().mode() & 0o777
}

/// The step a fault-injecting run is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    CreateTemp,
    WriteTemp,
    SyncTemp,
    OpenDir,
    Place,
    SyncDir,
    RemoveTemp,
}

/// The real file system, logging every step and failing the `fail_at`-th (0-based) with EIO
/// before it happens: a power cut at that point, as far as the files on disk are concerned.
struct Faulty {
    fail_at: Option<usize>,
    log: Vec<Step>,
}

impl Faulty {
    fn new(fail_at: Option<usize>) -> Self {
        Self {
            fail_at,
            log: Vec::new(),
        }
    }

    fn enter(&mut self, step: Step) -> io::Result<()> {
        let n = self.log.len();
        self.log.push(step);
        if Some(n) == self.fail_at {
            return Err(io::Error::other(format!("injected failure at {step:?}")));
        }
        Ok(())
    }
}

impl Steps for Faulty {
    fn create_temp(&mut self, tmp: &Path, mode: Option<u32>) -> io::Result<File> {
        self.enter(Step::CreateTemp)?;
        RealFs.create_temp(tmp, mode)
    }
    fn write_temp(&mut self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        self.enter(Step::WriteTemp)?;
        RealFs.write_temp(file, bytes)
    }
    fn sync_temp(&mut self, file: &File) -> io::Result<()> {
        self.enter(Step::SyncTemp)?;
        RealFs.sync_temp(file)
    }
    fn open_dir(&mut self, dir: &Path) -> io::Result<File> {
        self.enter(Step::OpenDir)?;
        RealFs.open_dir(dir)
    }
    fn place(&mut self, dir: &File, tmp: &Path, path: &Path, how: Replace) -> io::Result<Placed> {
        self.enter(Step::Place)?;
        RealFs.place(dir, tmp, path, how)
    }
    fn sync_dir(&mut self, dir: &File) -> io::Result<()> {
        self.enter(Step::SyncDir)?;
        RealFs.sync_dir(dir)
    }
    fn remove_temp(&mut self, tmp: &Path) -> io::Result<()> {
        self.enter(Step::RemoveTemp)?;
        RealFs.remove_temp(tmp)
    }
}

#[test]
fn replaces_content_and_leaves_no_temp_file_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("autoboot.txt");
    for (replace, text) in [
        (Replace::Exchange, "one"),
        (Replace::Exchange, "two"),
        (Replace::Rename, "three"),
    ] {
        write_atomic(&path, text.as_bytes(), replace).expect("write");
        assert_eq!(fs::read_to_string(&path).expect("read"), text);
    }
    assert_eq!(names(dir.path()), vec![OsString::from("autoboot.txt")]);
}

#[test]
fn the_temp_file_is_synced_before_it_takes_the_name_and_the_directory_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    let mut steps = Faulty::new(None);
    write_with(&mut steps, &path, b"new", &WriteOptions::new()).expect("write");
    assert_eq!(
        steps.log,
        vec![
            Step::CreateTemp,
            Step::WriteTemp,
            Step::SyncTemp,
            Step::OpenDir,
            Step::Place,
            Step::SyncDir
        ]
    );
    // An exchange leaves the old content under the temp name: removed, and that removal
    // synced too.
    let mut steps = Faulty::new(None);
    let opts = WriteOptions::new().replace(Replace::Exchange);
    write_with(&mut steps, &path, b"newer", &opts).expect("write");
    let place = steps.log.iter().position(|s| *s == Step::Place);
    assert_eq!(place, Some(4));
    assert_eq!(
        steps.log[4..],
        [Step::Place, Step::SyncDir, Step::RemoveTemp, Step::SyncDir]
    );
    assert_eq!(fs::read(&path).expect("read"), b"newer");
    assert_eq!(names(dir.path()), vec![OsString::from("state.json")]);
}

#[test]
fn a_failure_at_any_step_leaves_the_old_or_the_new_content_never_a_mix() {
    for replace in [Replace::Rename, Replace::Exchange] {
        let mut fail_at = 0;
        loop {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("journal");
            fs::write(&path, b"old content").expect("seed");
            let mut steps = Faulty::new(Some(fail_at));
            let opts = WriteOptions::new().replace(replace);
            let result = write_with(&mut steps, &path, b"the new content", &opts);
            let Err(e) = result else {
                break; // every step has been failed once
            };
            let failed = steps.log[fail_at];
            let now = fs::read(&path).expect("the target still exists");
            let placed = steps.log[..fail_at].contains(&Step::Place);
            let want: &[u8] = if placed {
                b"the new content"
            } else {
                b"old content"
            };
            assert_eq!(now, want, "{replace:?}, failed at {failed:?}");
            assert!(
                e.to_string().contains(&*dir.path().to_string_lossy()),
                "the error names the path: {e}"
            );
            if !placed {
                assert_eq!(
                    names(dir.path()),
                    vec![OsString::from("journal")],
                    "{replace:?}, failed at {failed:?}: the temp file is cleaned up"
                );
            }
            fail_at += 1;
        }
        assert!(fail_at >= 6, "{replace:?}: every step was tried");
    }
}

#[test]
fn a_new_file_gets_exactly_its_mode_and_a_stale_temp_file_does_not_leak_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("offer.key.pem");
    // A temp file left readable by a power cut during an earlier write.
    let stale = dir.path().join(".offer.key.pem.tmp");
    fs::write(&stale, b"half a key").expect("stale");
    fs::set_permissions(&stale, fs::Permissions::from_mode(0o644)).expect("chmod");
    WriteOptions::new()
        .mode(0o600)
        .write(&path, b"secret")
        .expect("write");
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(fs::read(&path).expect("read"), b"secret");
    assert_eq!(names(dir.path()), vec![OsString::from("offer.key.pem")]);
    let public = dir.path().join("offer.pub");
    WriteOptions::new()
        .mode(0o644)
        .write(&public, b"abc\n")
        .expect("write");
    assert_eq!(mode_of(&public), 0o644);
}

#[test]
fn never_replace_refuses_an_existing_target_and_leaves_it_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k.pem");
    let opts = WriteOptions::new().replace(Replace::Never).mode(0o600);
    opts.write(&path, b"first").expect("a new file is written");
    let e = opts.write(&path, b"second").expect_err("exists");
    assert!(
        matches!(e, Error::Exists { ref path } if path.ends_with("k.pem")),
        "{e:?}"
    );
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(
        e.to_string(),
        format!("unable to create {}: it already exists", path.display())
    );
    assert_eq!(fs::read(&path).expect("read"), b"first");
    assert_eq!(names(dir.path()), vec![OsString::from("k.pem")]);
}

#[test]
fn missing_parents_are_created_only_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a/b/c.txt");
    let e = write_atomic(&path, b"x", Replace::Rename).expect_err("no directory");
    assert!(matches!(e, Error::Temp { .. }), "{e:?}");
    assert_eq!(e.path(), path);
    WriteOptions::new()
        .create_parents()
        .write(&path, b"x")
        .expect("write");
    assert_eq!(fs::read(&path).expect("read"), b"x");
}

#[test]
fn the_directory_and_temp_file_are_derived_from_the_target_path() {
    assert_eq!(parent(Path::new("state.json")), PathBuf::from("."));
    assert_eq!(
        parent(Path::new("/data/state.json")),
        PathBuf::from("/data")
    );
    assert_eq!(
        temp_path(Path::new("/data/state.json")),
        PathBuf::from("/data/.state.json.tmp")
    );
}

#[test]
fn rename_moves_a_file_between_directories_and_errors_name_both_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let buffer = dir.path().join(".buffer");
    let data = dir.path().join("data");
    fs::create_dir_all(&buffer).expect("mkdir");
    fs::create_dir_all(&data).expect("mkdir");
    fs::write(buffer.join("a.wav"), b"RIFF").expect("write");
    rename(&buffer.join("a.wav"), &data.join("a.wav")).expect("move");
    assert!(names(&buffer).is_empty());
    assert_eq!(fs::read(data.join("a.wav")).expect("read"), b"RIFF");
    let e = rename(&buffer.join("a.wav"), &data.join("b.wav")).expect_err("gone");
    let text = e.to_string();
    assert!(text.contains("a.wav") && text.contains("b.wav"), "{text}");
    assert_eq!(e.path(), data.join("b.wav"));
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
}

#[test]
fn append_creates_then_adds_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("panic.journal");
    append(&path, b"one\n").expect("append");
    append(&path, b"two\n").expect("append");
    assert_eq!(fs::read_to_string(&path).expect("read"), "one\ntwo\n");
    let e = append(&dir.path().join("no/such/file"), b"x").expect_err("no dir");
    assert!(e.to_string().starts_with("unable to append to "), "{e}");
}

#[test]
fn syncing_a_missing_directory_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gone = dir.path().join("gone");
    let e = sync_dir(&gone).expect_err("missing");
    assert_eq!(
        e.to_string(),
        format!("unable to sync directory {}", gone.display())
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever fails when, the file always holds the content of the last write that
    /// succeeded (or, for a write that failed after its rename, that write's content).
    #[test]
    fn the_file_always_holds_a_whole_written_version(
        writes in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..2048), proptest::option::of(0usize..8), any::<bool>()),
            1..8,
        )
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state");
        let mut versions: Vec<Vec<u8>> = vec![b"initial".to_vec()];
        fs::write(&path, &versions[0]).expect("seed");
        for (bytes, fail_at, exchange) in writes {
            let replace = if exchange { Replace::Exchange } else { Replace::Rename };
            let mut steps = Faulty::new(fail_at);
            let ok = write_with(&mut steps, &path, &bytes, &WriteOptions::new().replace(replace)).is_ok();
            let placed = steps.log.iter().take(fail_at.unwrap_or(usize::MAX)).any(|s| *s == Step::Place);
            if ok || placed {
                versions.push(bytes);
            }
            let now = fs::read(&path).expect("the file always exists");
            prop_assert_eq!(&now, versions.last().expect("seeded"));
        }
    }
}
