//! Links sqlite-vec into every SQLite connection qlaud opens.
//!
//! The one audited `unsafe` of this module: handing SQLite the extension's
//! entry point. sqlite-vec and sqlx link the same SQLite (the workspace
//! pins `libsqlite3-sys` to the version sqlx uses), and the registration
//! happens once, before any connection is opened.
#![allow(unsafe_code)]

use std::sync::Once;

/// Registers sqlite-vec for every SQLite connection opened from now on.
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_vec_init` has the signature SQLite's
        // auto-extension mechanism calls (db, error message, API routines);
        // sqlite-vec exports it without the parameters in its Rust binding,
        // hence the transmute of the function pointer.
        let rc = unsafe {
            libsqlite3_sys::sqlite3_auto_extension(Some(std::mem::transmute::<
                *const (),
                unsafe extern "C" fn(
                    *mut libsqlite3_sys::sqlite3,
                    *mut *mut std::os::raw::c_char,
                    *const libsqlite3_sys::sqlite3_api_routines,
                ) -> std::os::raw::c_int,
            >(
                sqlite_vec::sqlite3_vec_init as *const (),
            )))
        };
        if rc != libsqlite3_sys::SQLITE_OK {
            tracing::error!(rc, "registering sqlite-vec failed: search will not work on SQLite");
        }
    });
}
