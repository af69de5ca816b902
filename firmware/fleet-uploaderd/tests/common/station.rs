//! A station in a temporary directory: the recorder's data directory, retentiond's index, the
//! uploader's state, and a configuration pointing at a test S3 server.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use fleet_retentiond::index::{Index, NewRecording};
use fleet_uploaderd::config::{self, Config};

use super::Pcm;
use super::s3::{ACCESS_KEY, BUCKET, SECRET_KEY};

pub struct Station {
    pub dir: tempfile::TempDir,
    pub recordings: PathBuf,
    pub index_path: PathBuf,
    pub state: PathBuf,
}

impl Station {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let recordings = dir.path().join("recorder/data");
        let retention = dir.path().join("retention");
        let state = dir.path().join("uploader");
        for d in [&recordings, &retention, &state] {
            std::fs::create_dir_all(d).unwrap();
        }
        let index_path = retention.join("index.sqlite");
        Index::open(&index_path).unwrap();
        Self {
            dir,
            recordings,
            index_path,
            state,
        }
    }

    pub fn index(&self) -> Index {
        Index::open(&self.index_path).unwrap()
    }

    /// Records a segment with the recorder's code and indexes it as retentiond does.
    pub fn record(&self, seq: u64, pcm: Pcm) -> PathBuf {
        let path = super::recording(&self.recordings, "st-1", "mic-0", seq, pcm);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let info = fleet_retentiond::wav::read(&path).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        self.index()
            .insert(&[NewRecording {
                path: name,
                station: "st-1".into(),
                device: "mic-0".into(),
                sequence: seq,
                start_unix_ms: Some(1_764_979_200_000 + i64::try_from(seq).unwrap() * 60_000),
                start_trusted: true,
                duration_ms: info.duration_ms(),
                sample_rate: info.sample_rate,
                size_bytes: size,
                data_bytes: info.data_bytes,
                repaired: false,
            }])
            .unwrap();
        path
    }

    /// Whether the index says the recording at `path` is uploaded.
    pub fn uploaded(&self, path: &Path) -> bool {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        self.index()
            .connection()
            .query_row(
                "SELECT uploaded FROM recordings WHERE path = ?1",
                [name],
                |r| r.get::<_, bool>(0),
            )
            .unwrap()
    }

    /// Writes the credentials file and returns the configuration text for `endpoint`.
    pub fn config_text(&self, endpoint: &str, extra: &str) -> String {
        self.credentials(ACCESS_KEY, SECRET_KEY);
        format!(
            "recordings-dir = \"{}\"\nindex-path = \"{}\"\nstate-dir = \"{}\"\n\
             data-dir = \"{}\"\ntrust-time = \"always\"\npoll-seconds = 0.05\n\
             {extra}\n\
             [destination]\nkind = \"s3\"\nendpoint = \"{endpoint}\"\nbucket = \"{BUCKET}\"\n\
             prefix = \"fleet/\"\ntimeout-seconds = 5\n",
            self.recordings.display(),
            self.index_path.display(),
            self.state.display(),
            self.dir.path().display(),
        )
    }

    pub fn credentials(&self, key: &str, secret: &str) {
        std::fs::write(
            self.state.join("credentials.toml"),
            format!("access-key-id = \"{key}\"\nsecret-access-key = \"{secret}\"\n"),
        )
        .unwrap();
    }

    /// The SFTP key files under the station's data directory.
    pub fn sftp_key(&self) -> PathBuf {
        self.state.join("sftp/id_ed25519")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.state.join("sftp/known_hosts")
    }

    /// Copies the server's authorized key and host key into the station's files and returns
    /// the configuration for it; `destination` lines are appended to `[destination]`.
    pub fn sftp_config(
        &self,
        server: &super::sftp::SshServer,
        extra: &str,
        destination: &str,
    ) -> Config {
        std::fs::create_dir_all(self.state.join("sftp")).unwrap();
        std::fs::copy(&server.user_key, self.sftp_key()).unwrap();
        std::fs::write(self.known_hosts(), server.known_hosts_line()).unwrap();
        let text = format!(
            "recordings-dir = \"{}\"\nindex-path = \"{}\"\nstate-dir = \"{}\"\n\
             data-dir = \"{}\"\ntrust-time = \"always\"\npoll-seconds = 0.05\n\
             {extra}\n\
             [destination]\nkind = \"sftp\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\n\
             remote-dir = \"{}\"\nprivate-key-file = \"{}\"\nknown-hosts-file = \"{}\"\n\
             timeout-seconds = 5\n{destination}\n",
            self.recordings.display(),
            self.index_path.display(),
            self.state.display(),
            self.dir.path().display(),
            server.port,
            server.user,
            server.root.display(),
            self.sftp_key().display(),
            self.known_hosts().display(),
        );
        let path = self.dir.path().join("uploaderd.toml");
        std::fs::write(&path, text).unwrap();
        config::load(&path).unwrap()
    }

    pub fn config(&self, endpoint: &str, extra: &str) -> Config {
        self.config_with(endpoint, extra, "")
    }

    /// `destination` lines are appended to the `[destination]` table.
    pub fn config_with(&self, endpoint: &str, extra: &str, destination: &str) -> Config {
        let text = format!("{}{destination}\n", self.config_text(endpoint, extra));
        let path = self.dir.path().join("uploaderd.toml");
        std::fs::write(&path, text).unwrap();
        config::load(&path).unwrap()
    }
}
