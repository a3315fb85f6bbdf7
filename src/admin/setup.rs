//! The first run's setup code.
//!
//! While no administrator exists, whoever reaches the console first could
//! make themselves its Security Administrator. So at each start without an
//! administrator the server makes a one-time code, shows it to whoever
//! started it (`bramble serve` prints it; the desktop shell fills it in) and
//! writes it to `data_dir/setup-code`, readable by the server's account
//! only; `POST /api/setup` requires it. Once the first administrator exists
//! the code is forgotten and the file removed. `bramble admin create` needs
//! no code: it runs as the account that owns the data folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Characters of a code: Crockford's base 32 (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters in a code (5 bits each: 100 bits).
const LENGTH: usize = 20;

/// The file the code is written to, in the data folder.
pub fn code_path(data_dir: &Path) -> PathBuf {
    data_dir.join("setup-code")
}

/// Why the code could not be made or written.
#[derive(Debug, thiserror::Error)]
#[error("the first-run setup code could not be written to {path}: {message}")]
pub struct SetupCodeError {
    pub path: PathBuf,
    pub message: String,
}

impl SetupCodeError {
    pub fn code(&self) -> &'static str {
        "SETUP_CODE_UNWRITABLE"
    }
}

/// The current code, if the first administrator is still to be created.
#[derive(Debug, Default)]
pub struct SetupCode {
    code: Mutex<Option<String>>,
    path: PathBuf,
}

/// A code as typed, for comparing: upper case, without separators, with
/// the letters people confuse with digits read as those digits.
fn normalize(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect()
}

fn generate() -> Result<String, openssl::error::ErrorStack> {
    let mut bytes = [0u8; LENGTH];
    openssl::rand::rand_bytes(&mut bytes)?;
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b % 32)]))
        .collect();
    Ok(chars
        .chunks(5)
        .map(|group| group.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-"))
}

impl SetupCode {
    /// No code: an administrator exists.
    pub fn none(data_dir: &Path) -> SetupCode {
        SetupCode {
            code: Mutex::new(None),
            path: code_path(data_dir),
        }
    }

    /// At start: when `needed` (no administrator exists), a new code is made
    /// and written to [`code_path`] (mode 0600); otherwise a code file left
    /// behind is removed.
    pub fn prepare(data_dir: &Path, needed: bool) -> Result<SetupCode, SetupCodeError> {
        let setup = SetupCode::none(data_dir);
        if !needed {
            setup.remove_file();
            return Ok(setup);
        }
        let fail = |message: String| SetupCodeError {
            path: setup.path.clone(),
            message,
        };
        let code = generate().map_err(|e| fail(e.to_string()))?;
        write_private(&setup.path, &code).map_err(|e| fail(e.to_string()))?;
        if let Ok(mut slot) = setup.code.lock() {
            *slot = Some(code);
        }
        Ok(setup)
    }

    /// The code to show, while one is needed.
    pub fn code(&self) -> Option<String> {
        self.code.lock().ok().and_then(|c| c.clone())
    }

    /// Where the code is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `given` is the current code (compared in constant time).
    pub fn matches(&self, given: &str) -> bool {
        let Some(code) = self.code() else {
            return false;
        };
        let (given, code) = (normalize(given), normalize(&code));
        given.len() == code.len() && openssl::memcmp::eq(given.as_bytes(), code.as_bytes())
    }

    /// The first administrator exists: the code is spent.
    pub fn spent(&self) {
        if let Ok(mut slot) = self.code.lock() {
            *slot = None;
        }
        self.remove_file();
    }

    fn remove_file(&self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(target: "bramble::admin", path = %self.path.display(), "cannot remove the spent setup code: {e}; delete the file");
            }
        }
    }
}

/// Writes `text` to `path` readable by its owner only, replacing any file
/// there (written beside it and renamed, so no reader sees half a code).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&partial)?;
    file.write_all(format!("{text}\n").as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&partial, path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_written_for_its_owner_only_matched_as_typed_and_spent_once() {
        let dir = tempfile::tempdir().unwrap();
        let setup = SetupCode::prepare(dir.path(), true).unwrap();
        let code = setup.code().unwrap();
        assert_eq!(code.len(), LENGTH + 3, "{code}");
        let written = std::fs::read_to_string(code_path(dir.path())).unwrap();
        assert_eq!(written.trim(), code);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(code_path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(setup.matches(&code));
        assert!(setup.matches(&code.to_lowercase().replace('-', " ")));
        assert!(!setup.matches(""));
        assert!(!setup.matches(&code[..code.len() - 1]));
        let other = SetupCode::prepare(dir.path(), true).unwrap();
        assert_ne!(other.code(), Some(code.clone()), "a new code each start");
        setup.spent();
        assert!(!setup.matches(&code));
        assert!(!code_path(dir.path()).exists());
    }

    #[test]
    fn no_code_once_an_administrator_exists_and_a_left_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(code_path(dir.path()), "OLD\n").unwrap();
        let setup = SetupCode::prepare(dir.path(), false).unwrap();
        assert_eq!(setup.code(), None);
        assert!(!setup.matches("OLD"));
        assert!(!code_path(dir.path()).exists());
    }
}
