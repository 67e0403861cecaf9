//! [`SqliteStore`]: the durable [`Store`], in one SQLite file.
//!
//! SQLite is compiled in (rusqlite's `bundled`), so nothing is needed on
//! the machine. The file is in WAL mode with `synchronous=NORMAL`: a
//! committed batch survives the process being killed; on power loss the
//! last batches before it may be lost, never half of one.
//!
//! Schema (version [`SCHEMA_VERSION`]): one table per kind of record, keyed
//! by node path, each value encoded by the store's codec
//! ([`fsm_core::store::codec`]):
//!
//! ```text
//! schema_version(version)
//! root(id = 0, doc)                           the root spec and tree generation
//! identity(path PRIMARY KEY, doc)             NodeIdentity
//! desired(path → identity, doc)               DesiredDocument
//! observed(path → identity, doc)              ObservedDocument
//! action(path → identity, id, doc)            ActionRecord, keyed by (path, id)
//! ```
//!
//! The documents and actions reference their node's identity and are
//! deleted with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fsm_core::NodePath;
use fsm_core::store::codec::{decode, encode};
use fsm_core::store::{Change, NodeRecord, Store, StoreError, StoredTree};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, params};

/// The store of a running tree, as [`TreeConfig::store`] holds it: any
/// [`Store`], shared by the tree's store actor (which writes to it on a
/// blocking thread) and cloned with the configuration.
///
/// [`TreeConfig::store`]: crate::TreeConfig::store
#[derive(Clone)]
pub struct TreeStore(pub(crate) crate::persist::SharedStore);

impl TreeStore {
    /// Wraps a store for a tree.
    #[must_use]
    pub fn new(store: impl Store + Send + 'static) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(Box::new(store))))
    }
}

impl std::fmt::Debug for TreeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeStore").finish_non_exhaustive()
    }
}

/// The schema version this build writes; it reads this one and every older
/// one (migrating them forward when it opens them).
pub const SCHEMA_VERSION: u32 = 1;

/// The statements that bring a store from version `i` to version `i + 1`
/// (index `i`); version 0 is a new, empty file. A future schema adds an
/// entry here and never edits an earlier one.
const MIGRATIONS: &[&str] = &[
    // 0 → 1: the first schema.
    "CREATE TABLE schema_version (version INTEGER NOT NULL);
     INSERT INTO schema_version (version) VALUES (0);
     CREATE TABLE root (id INTEGER PRIMARY KEY CHECK (id = 0), doc BLOB NOT NULL);
     CREATE TABLE identity (path TEXT PRIMARY KEY, doc BLOB NOT NULL);
     CREATE TABLE desired (
         path TEXT PRIMARY KEY REFERENCES identity(path) ON DELETE CASCADE,
         doc BLOB NOT NULL);
     CREATE TABLE observed (
         path TEXT PRIMARY KEY REFERENCES identity(path) ON DELETE CASCADE,
         doc BLOB NOT NULL);
     CREATE TABLE action (
         path TEXT NOT NULL REFERENCES identity(path) ON DELETE CASCADE,
         id INTEGER NOT NULL,
         doc BLOB NOT NULL,
         PRIMARY KEY (path, id));",
];

/// A [`Store`] in one SQLite file.
///
/// # Examples
///
/// ```no_run
/// use fsm_actors::store::SqliteStore;
/// use fsm_core::store::Store;
///
/// let store = SqliteStore::open("plant.store")?;
/// if let Some(tree) = store.load()? {
///     println!("{} nodes stored", tree.nodes.len());
/// }
/// # Ok::<(), fsm_core::store::StoreError>(())
/// ```
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens the store in the file at `path`, creating the file (readable
    /// and writable by its owner only, since specs may hold credentials) and
    /// the schema when there is none, and migrating an older schema forward.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotAStore`] for a file that is not SQLite or an SQLite
    /// database without a store's tables, [`StoreError::NewerSchema`] for a
    /// store written by a newer build (in both cases the file is left as it
    /// was), [`StoreError::Backend`] when the file cannot be opened, is
    /// locked or cannot be written.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        create_private(&path)?;
        let conn = Connection::open(&path).map_err(|e| backend(&path, &e))?;
        let mut store = Self { conn, path };
        let version = store.schema_version()?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                location: store.location(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        // Only now, with the file known to be a store (or empty), change it.
        store
            .conn
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
            )
            .map_err(|e| store.error(&e))?;
        store.migrate(version)?;
        Ok(store)
    }

    /// The file the store is in.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn error(&self, e: &rusqlite::Error) -> StoreError {
        backend(&self.path, e)
    }

    /// The schema version in the file: 0 for a new, empty file.
    fn schema_version(&self) -> Result<u32, StoreError> {
        let tables: i64 = self
            .conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .map_err(|e| self.error(&e))?;
        if tables == 0 {
            return Ok(0);
        }
        let has_version: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
                [],
                |row| row.get(0),
            )
            .map_err(|e| self.error(&e))?;
        if has_version == 0 {
            return Err(
                self.not_a_store("an SQLite database without a store's `schema_version` table")
            );
        }
        let version: Option<i64> = self
            .conn
            .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
            .optional()
            .map_err(|e| self.error(&e))?;
        version
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| self.not_a_store("its `schema_version` table holds no valid version"))
    }

    fn not_a_store(&self, message: &str) -> StoreError {
        StoreError::NotAStore {
            location: self.location(),
            message: message.to_owned(),
        }
    }

    /// Applies the migrations from `from` up to [`SCHEMA_VERSION`], in one
    /// transaction.
    fn migrate(&mut self, from: u32) -> Result<(), StoreError> {
        if from == SCHEMA_VERSION {
            return Ok(());
        }
        let location = self.location();
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| backend(&path, &e))?;
        for (to, sql) in (1..).zip(MIGRATIONS).skip(from as usize) {
            tx.execute_batch(sql).map_err(|e| backend(&path, &e))?;
            tx.execute("UPDATE schema_version SET version = ?1", params![to])
                .map_err(|e| backend(&path, &e))?;
        }
        tx.commit().map_err(|e| backend(&path, &e))?;
        tracing::debug!(store = %location, from, to = SCHEMA_VERSION, "store schema migrated");
        Ok(())
    }

    fn apply(tx: &Transaction<'_>, file: &Path, change: &Change) -> Result<(), StoreError> {
        let result = match change {
            Change::Root(root) => tx.execute(
                "INSERT INTO root (id, doc) VALUES (0, ?1)
                 ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
                params![encode(&NodePath::top(), root)?],
            ),
            // An upsert, never `INSERT OR REPLACE`: replacing the identity
            // row would delete the node's documents with it.
            Change::Identity(identity) => tx.execute(
                "INSERT INTO identity (path, doc) VALUES (?1, ?2)
                 ON CONFLICT (path) DO UPDATE SET doc = excluded.doc",
                params![identity.path.as_str(), encode(&identity.path, identity)?],
            ),
            Change::Desired(path, doc) => tx.execute(
                "INSERT INTO desired (path, doc) VALUES (?1, ?2)
                 ON CONFLICT (path) DO UPDATE SET doc = excluded.doc",
                params![path.as_str(), encode(path, doc)?],
            ),
            Change::Observed(path, doc) => tx.execute(
                "INSERT INTO observed (path, doc) VALUES (?1, ?2)
                 ON CONFLICT (path) DO UPDATE SET doc = excluded.doc",
                params![path.as_str(), encode(path, doc)?],
            ),
            Change::Action(action) => tx.execute(
                "INSERT INTO action (path, id, doc) VALUES (?1, ?2, ?3)
                 ON CONFLICT (path, id) DO UPDATE SET doc = excluded.doc",
                params![
                    action.node.as_str(),
                    sql_id(action.id),
                    encode(&action.node, action)?
                ],
            ),
            // The node and its whole subtree (compared by prefix, not
            // `LIKE`, whose `_` and `%` may be in names).
            Change::Remove(path) => tx.execute(
                "DELETE FROM identity
                 WHERE path = ?1 OR substr(path, 1, length(?1) + 1) = ?1 || '/'",
                params![path.as_str()],
            ),
            other => {
                return Err(StoreError::Backend {
                    location: file.display().to_string(),
                    message: format!("change {other:?} is not supported by this backend"),
                });
            }
        };
        result.map(drop).map_err(|e| {
            if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) {
                // The only constraint a well-formed batch can break: a
                // record of a node whose identity is not stored.
                StoreError::UnknownNode {
                    path: change.path(),
                }
            } else {
                backend(file, &e)
            }
        })
    }
}

impl Store for SqliteStore {
    fn write(&mut self, batch: &[Change]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        // Dropped without `commit` on an error: rolled back, nothing of the
        // batch stays.
        let tx = self.conn.transaction().map_err(|e| backend(&path, &e))?;
        for change in batch {
            Self::apply(&tx, &path, change)?;
        }
        tx.commit().map_err(|e| backend(&path, &e))
    }

    fn read_all(&self) -> Result<Option<StoredTree>, StoreError> {
        let err = |e: rusqlite::Error| self.error(&e);
        let mut tree = StoredTree::default();
        let root: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT doc FROM root WHERE id = 0", [], |row| row.get(0))
            .optional()
            .map_err(err)?;
        tree.root = root
            .map(|bytes| decode(&NodePath::top(), &bytes))
            .transpose()?;
        let mut nodes = BTreeMap::new();
        for (path, bytes) in self.rows("SELECT path, doc FROM identity")? {
            nodes.insert(path.clone(), NodeRecord::new(decode(&path, &bytes)?));
        }
        // The foreign keys guarantee every row below has its identity.
        for (path, bytes) in self.rows("SELECT path, doc FROM desired")? {
            if let Some(record) = nodes.get_mut(&path) {
                record.desired = Some(decode(&path, &bytes)?);
            }
        }
        for (path, bytes) in self.rows("SELECT path, doc FROM observed")? {
            if let Some(record) = nodes.get_mut(&path) {
                record.observed = Some(decode(&path, &bytes)?);
            }
        }
        for (path, bytes) in self.rows("SELECT path, doc FROM action")? {
            if let Some(record) = nodes.get_mut(&path) {
                let action: fsm_core::store::ActionRecord = decode(&path, &bytes)?;
                record.actions.insert(action.id, action);
            }
        }
        tree.nodes = nodes;
        Ok((!tree.is_empty()).then_some(tree))
    }
}

impl SqliteStore {
    /// Every `(path, doc)` row of a query.
    fn rows(&self, sql: &str) -> Result<Vec<(NodePath, Vec<u8>)>, StoreError> {
        let err = |e: rusqlite::Error| self.error(&e);
        let mut stmt = self.conn.prepare(sql).map_err(err)?;
        let rows = stmt
            .query_map([], |row| {
                let path: String = row.get(0)?;
                let doc: Vec<u8> = row.get(1)?;
                Ok((NodePath::parse(&path), doc))
            })
            .map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }
}

/// SQLite's integers are signed; the id's bits are kept as they are.
fn sql_id(id: u64) -> i64 {
    i64::from_ne_bytes(id.to_ne_bytes())
}

fn backend(file: &Path, e: &rusqlite::Error) -> StoreError {
    let location = file.display().to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::NotAStore {
            location,
            message: "the file is not an SQLite database".to_owned(),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Backend {
            location,
            message: format!("the file is locked by another process ({e})"),
        },
        _ => StoreError::Backend {
            location,
            message: e.to_string(),
        },
    }
}

/// Creates the file, empty and readable by its owner only, when it does
/// not exist. (SQLite gives its `-wal` and `-shm` files the same mode.)
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Backend {
            location: path.display().to_string(),
            message: format!("cannot create the file: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fsm_core::store::conformance;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A file name in the temp dir, unique to this process and call; the
    /// file and its `-wal` and `-shm` companions are removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            Self(
                std::env::temp_dir()
                    .join(format!("fsm-store-test-{}-{n}.sqlite", std::process::id())),
            )
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let mut name = self.0.clone().into_os_string();
                name.push(suffix);
                let _ = std::fs::remove_file(name);
            }
        }
    }

    fn side_connection(store: &SqliteStore) -> Connection {
        Connection::open(store.path()).unwrap()
    }

    #[test]
    fn the_sqlite_store_passes_the_conformance_suite() {
        let mut files = Vec::new();
        conformance::run(
            || {
                let file = TempFile::new();
                let store = SqliteStore::open(&file.0).unwrap();
                files.push(file);
                store
            },
            |store, path, bytes| {
                side_connection(store)
                    .execute(
                        "INSERT INTO observed (path, doc) VALUES (?1, ?2)
                         ON CONFLICT (path) DO UPDATE SET doc = excluded.doc",
                        params![path.as_str(), bytes],
                    )
                    .unwrap();
            },
        );
    }

    #[test]
    fn a_reopened_store_sees_what_was_committed() {
        let file = TempFile::new();
        let mut store = SqliteStore::open(&file.0).unwrap();
        let path = NodePath::parse("plant");
        store
            .write(&[
                conformance::identity("plant"),
                Change::Desired(path.clone(), conformance::desired("plant", 3)),
                Change::Action(conformance::action("plant", 1, None)),
            ])
            .unwrap();
        let before = store.read_all().unwrap();
        drop(store);
        let store = SqliteStore::open(&file.0).unwrap();
        assert_eq!(store.read_all().unwrap(), before);
        let tree = store.load().unwrap().unwrap();
        assert_eq!(
            tree.nodes[&path].desired,
            Some(conformance::desired("plant", 3))
        );
        assert_eq!(
            tree.nodes[&path].actions[&1].outcome,
            Some(fsm_core::store::StoredOutcome::Interrupted)
        );
    }

    #[test]
    fn the_store_is_in_wal_mode_with_normal_sync_and_owner_only_permissions() {
        let file = TempFile::new();
        let store = SqliteStore::open(&file.0).unwrap();
        // The journal mode is kept in the file: another connection sees it.
        let mode: String = side_connection(&store)
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        // synchronous is per connection: 1 is NORMAL.
        let sync: i64 = store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file.0).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_store_of_a_newer_schema_is_refused_and_left_as_it_was() {
        let file = TempFile::new();
        let store = SqliteStore::open(&file.0).unwrap();
        side_connection(&store)
            .execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
        drop(store);
        let err = SqliteStore::open(&file.0).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::NewerSchema {
                    found: 99,
                    supported: SCHEMA_VERSION,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&file.0.display().to_string()),
            "{err}"
        );
        let version: i64 = Connection::open(&file.0)
            .unwrap()
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 99);
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused_and_left_unchanged() {
        let garbage = TempFile::new();
        let bytes =
            b"this is a text file, not a database, and long enough to have a header".repeat(20);
        std::fs::write(&garbage.0, &bytes).unwrap();
        let err = SqliteStore::open(&garbage.0).unwrap_err();
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
        assert_eq!(std::fs::read(&garbage.0).unwrap(), bytes);

        let other = TempFile::new();
        Connection::open(&other.0)
            .unwrap()
            .execute_batch("CREATE TABLE accounts (name TEXT)")
            .unwrap();
        let before = std::fs::read(&other.0).unwrap();
        let err = SqliteStore::open(&other.0).unwrap_err();
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
        assert!(err.to_string().contains("schema_version"), "{err}");
        assert_eq!(std::fs::read(&other.0).unwrap(), before);
    }
}
