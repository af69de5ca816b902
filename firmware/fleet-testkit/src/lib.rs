//! Fakes and harnesses shared by tests. A dev-dependency only: never linked into a daemon.
