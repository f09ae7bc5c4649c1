//! OpenSSL, loaded at run time: the library CPython's `_ssl` module uses, found by the caller.
//!
//! The TLS floor (tls.rs) must cost what OpenSSL costs in the Python servers it is the floor of,
//! so it uses the very same shared library (benches/net.py passes the `libssl` path it finds
//! mapped in its own process after `import ssl`). It is opened with dlopen(3) and the ~20
//! functions the server needs are looked up by name: no OpenSSL headers or libssl-dev at build
//! time, and a build machine without OpenSSL still builds netfloor. Every prototype below is the
//! one of OpenSSL 1.1.1 and 3.x's `<openssl/ssl.h>` / `<openssl/err.h>` (the macros
//! `SSL_CTX_set_mode` and `SSL_CTX_set_read_ahead` are `SSL_CTX_ctrl` calls, ssl.h).
//!
//! The safe wrappers keep the invariants: an `SslConn` owns its `SSL*` (freed once, on drop)
//! and borrows the `Tls` context it was made from, which owns the `SSL_CTX*`.

use std::ffi::{c_char, c_int, c_long, c_ulong, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Opaque OpenSSL types (pointers only).
type SslCtx = c_void;
type Ssl = c_void;
type SslMethod = c_void;
type Bio = c_void;
type BioMethod = c_void;

// ssl.h constants (stable across 1.1.1 and 3.x).
const SSL_FILETYPE_PEM: c_int = 1;
const SSL_ERROR_SSL: c_int = 1;
const SSL_ERROR_WANT_READ: c_int = 2;
const SSL_ERROR_WANT_WRITE: c_int = 3;
const SSL_ERROR_SYSCALL: c_int = 5;
const SSL_ERROR_ZERO_RETURN: c_int = 6;
const SSL_CTRL_MODE: c_int = 33;
const SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER: c_long = 0x2;
const SSL_MODE_AUTO_RETRY: c_long = 0x4;
const SSL_MODE_RELEASE_BUFFERS: c_long = 0x10;
const SSL_OP_NO_COMPRESSION: u64 = 1 << 17;
const SSL_OP_CIPHER_SERVER_PREFERENCE: u64 = 1 << 22;

/// The functions the server calls, resolved from the loaded library.
struct Api {
    tls_server_method: unsafe extern "C" fn() -> *const SslMethod,
    ctx_new: unsafe extern "C" fn(*const SslMethod) -> *mut SslCtx,
    ctx_free: unsafe extern "C" fn(*mut SslCtx),
    ctx_use_certificate_chain_file: unsafe extern "C" fn(*mut SslCtx, *const c_char) -> c_int,
    ctx_use_private_key_file: unsafe extern "C" fn(*mut SslCtx, *const c_char, c_int) -> c_int,
    ctx_check_private_key: unsafe extern "C" fn(*const SslCtx) -> c_int,
    // uint64_t in 3.x, unsigned long in 1.1.1: the same 64 bits on LP64.
    ctx_set_options: unsafe extern "C" fn(*mut SslCtx, u64) -> u64,
    ctx_ctrl: unsafe extern "C" fn(*mut SslCtx, c_int, c_long, *mut c_void) -> c_long,
    ssl_new: unsafe extern "C" fn(*mut SslCtx) -> *mut Ssl,
    ssl_free: unsafe extern "C" fn(*mut Ssl),
    ssl_set_bio: unsafe extern "C" fn(*mut Ssl, *mut Bio, *mut Bio),
    bio_s_mem: unsafe extern "C" fn() -> *const BioMethod,
    bio_new: unsafe extern "C" fn(*const BioMethod) -> *mut Bio,
    bio_free: unsafe extern "C" fn(*mut Bio) -> c_int,
    bio_write: unsafe extern "C" fn(*mut Bio, *const c_void, c_int) -> c_int,
    bio_read: unsafe extern "C" fn(*mut Bio, *mut c_void, c_int) -> c_int,
    ssl_set_accept_state: unsafe extern "C" fn(*mut Ssl),
    ssl_do_handshake: unsafe extern "C" fn(*mut Ssl) -> c_int,
    ssl_read: unsafe extern "C" fn(*mut Ssl, *mut c_void, c_int) -> c_int,
    ssl_write: unsafe extern "C" fn(*mut Ssl, *const c_void, c_int) -> c_int,
    ssl_get_error: unsafe extern "C" fn(*const Ssl, c_int) -> c_int,
    ssl_shutdown: unsafe extern "C" fn(*mut Ssl) -> c_int,
    err_get_error: unsafe extern "C" fn() -> c_ulong,
    err_error_string_n: unsafe extern "C" fn(c_ulong, *mut c_char, usize),
    err_clear_error: unsafe extern "C" fn(),
}

/// Looks `name` up in `handle` as a function of type `F` (the Api field it is assigned to).
///
/// # Safety
/// `handle` is a live dlopen handle, and `F` a function pointer type matching the C prototype of
/// the symbol `name` (see Api).
unsafe fn lookup<F: Copy>(handle: *mut c_void, name: &CStr) -> Result<F, String> {
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<*mut c_void>()) };
    // SAFETY: a live handle (the caller's contract) and a NUL-terminated name.
    let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
    if p.is_null() {
        return Err(format!(
            "{} not found in the library",
            name.to_string_lossy()
        ));
    }
    // SAFETY: `p` is the address of the function `name`, whose prototype is `F` (the caller's
    // contract), and the sizes match (above): data and function pointers share one
    // representation where dlsym(3) exists (POSIX requires it).
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

macro_rules! sym {
    ($handle:expr, $name:literal) => {
        // SAFETY: a live handle (Api::load); each field's type is its symbol's prototype.
        unsafe { lookup($handle, $name) }?
    };
}

impl Api {
    fn load(path: &Path) -> Result<Api, String> {
        let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: a NUL-terminated path; RTLD_LOCAL keeps the symbols out of the global scope.
        // The handle is never closed: the functions stay valid for the life of the process.
        let handle = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            // SAFETY: dlerror returns a NUL-terminated string or null, valid until the next call.
            let why = unsafe { libc::dlerror() };
            let why = if why.is_null() {
                "dlopen failed".to_string()
            } else {
                // SAFETY: non-null, NUL-terminated (above), read before any other dl* call.
                unsafe { CStr::from_ptr(why) }
                    .to_string_lossy()
                    .into_owned()
            };
            return Err(why);
        }
        Ok(Api {
            tls_server_method: sym!(handle, c"TLS_server_method"),
            ctx_new: sym!(handle, c"SSL_CTX_new"),
            ctx_free: sym!(handle, c"SSL_CTX_free"),
            ctx_use_certificate_chain_file: sym!(handle, c"SSL_CTX_use_certificate_chain_file"),
            ctx_use_private_key_file: sym!(handle, c"SSL_CTX_use_PrivateKey_file"),
            ctx_check_private_key: sym!(handle, c"SSL_CTX_check_private_key"),
            ctx_set_options: sym!(handle, c"SSL_CTX_set_options"),
            ctx_ctrl: sym!(handle, c"SSL_CTX_ctrl"),
            ssl_new: sym!(handle, c"SSL_new"),
            ssl_free: sym!(handle, c"SSL_free"),
            ssl_set_bio: sym!(handle, c"SSL_set_bio"),
            bio_s_mem: sym!(handle, c"BIO_s_mem"),
            bio_new: sym!(handle, c"BIO_new"),
            bio_free: sym!(handle, c"BIO_free"),
            bio_write: sym!(handle, c"BIO_write"),
            bio_read: sym!(handle, c"BIO_read"),
            ssl_set_accept_state: sym!(handle, c"SSL_set_accept_state"),
            ssl_do_handshake: sym!(handle, c"SSL_do_handshake"),
            ssl_read: sym!(handle, c"SSL_read"),
            ssl_write: sym!(handle, c"SSL_write"),
            ssl_get_error: sym!(handle, c"SSL_get_error"),
            ssl_shutdown: sym!(handle, c"SSL_shutdown"),
            err_get_error: sym!(handle, c"ERR_get_error"),
            err_error_string_n: sym!(handle, c"ERR_error_string_n"),
            err_clear_error: sym!(handle, c"ERR_clear_error"),
        })
    }

    /// The first queued OpenSSL error as text (empty queue: `what`), and the queue cleared.
    fn last_error(&self, what: &str) -> String {
        // SAFETY: reads and pops this thread's error queue; no arguments.
        let code = unsafe { (self.err_get_error)() };
        // SAFETY: no arguments; empties the queue so later SSL_get_error calls see a clean one.
        unsafe { (self.err_clear_error)() };
        if code == 0 {
            return what.to_string();
        }
        let mut buf = [0 as c_char; 256];
        // SAFETY: writes at most buf.len() bytes, NUL-terminated, into buf.
        unsafe { (self.err_error_string_n)(code, buf.as_mut_ptr(), buf.len()) };
        // SAFETY: NUL-terminated by ERR_error_string_n (above).
        let text = unsafe { CStr::from_ptr(buf.as_ptr()) };
        format!("{what}: {}", text.to_string_lossy())
    }
}

/// A server context: the library, and an `SSL_CTX` holding the certificate chain and key.
pub struct Tls {
    api: Api,
    ctx: *mut SslCtx,
}

impl Tls {
    /// Loads `libssl` and makes a TLS server context from `pem` (the certificate chain and the
    /// private key in one file, as `ssl.SSLContext.load_cert_chain(pem)` takes it); without
    /// `pem`, a context with no certificate (a probe: the library loads and works).
    ///
    /// The options are those of `ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)` that
    /// touch the record path (no compression, the server's cipher order; CPython
    /// Modules/_ssl.c `_ssl__SSLContext_impl`); the protocol range and cipher list are
    /// OpenSSL's defaults, which negotiate TLS 1.3 with a Python client as the Python servers
    /// do.
    pub fn server(libssl: &Path, pem: Option<&Path>) -> Result<Tls, String> {
        let api = Api::load(libssl)?;
        // SAFETY: no arguments; returns a static method table.
        let method = unsafe { (api.tls_server_method)() };
        // SAFETY: a valid method table; returns a new context or null.
        let ctx = unsafe { (api.ctx_new)(method) };
        if ctx.is_null() {
            return Err(api.last_error("SSL_CTX_new"));
        }
        let tls = Tls { api, ctx }; // frees the context on any error below
        let Some(pem) = pem else {
            return Ok(tls);
        };
        let cpem = CString::new(pem.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: a live context and a NUL-terminated path.
        if unsafe { (tls.api.ctx_use_certificate_chain_file)(tls.ctx, cpem.as_ptr()) } != 1 {
            return Err(tls.api.last_error("SSL_CTX_use_certificate_chain_file"));
        }
        // SAFETY: as above.
        let ok =
            unsafe { (tls.api.ctx_use_private_key_file)(tls.ctx, cpem.as_ptr(), SSL_FILETYPE_PEM) };
        if ok != 1 {
            return Err(tls.api.last_error("SSL_CTX_use_PrivateKey_file"));
        }
        // SAFETY: a live context with a certificate and a key set.
        if unsafe { (tls.api.ctx_check_private_key)(tls.ctx) } != 1 {
            return Err(tls.api.last_error("SSL_CTX_check_private_key"));
        }
        let options = SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE;
        // SAFETY: a live context; options are plain bits.
        unsafe { (tls.api.ctx_set_options)(tls.ctx, options) };
        // The modes CPython's `_ssl` gives its contexts and SSL objects (Modules/_ssl.c:
        // RELEASE_BUFFERS in `_ssl__SSLContext_impl`, ACCEPT_MOVING_WRITE_BUFFER | AUTO_RETRY in
        // `newPySSLSocket`), so OpenSSL does the same buffer work per record as in Python.
        let mode =
            SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_AUTO_RETRY;
        // SAFETY: SSL_CTX_set_mode(ctx, mode) is this ctrl call (ssl.h); no pointer argument.
        unsafe { (tls.api.ctx_ctrl)(tls.ctx, SSL_CTRL_MODE, mode, std::ptr::null_mut()) };
        Ok(tls)
    }

    /// A server-side connection over two memory BIOs, as CPython's `ssl.SSLObject` (and so
    /// every asyncio TLS transport) runs: the caller moves ciphertext between them and the socket
    /// (`feed`, `take_output`).
    pub fn accept(&self) -> Result<SslConn<'_>, String> {
        // SAFETY: no arguments; a static method table.
        let method = unsafe { (self.api.bio_s_mem)() };
        // SAFETY: a valid method table; returns a new BIO or null.
        let rbio = unsafe { (self.api.bio_new)(method) };
        // SAFETY: as above.
        let wbio = unsafe { (self.api.bio_new)(method) };
        // SAFETY: a live context; returns a new SSL or null.
        let ssl = unsafe { (self.api.ssl_new)(self.ctx) };
        if rbio.is_null() || wbio.is_null() || ssl.is_null() {
            for bio in [rbio, wbio] {
                if !bio.is_null() {
                    // SAFETY: a BIO made above and owned by nothing else.
                    unsafe { (self.api.bio_free)(bio) };
                }
            }
            if !ssl.is_null() {
                // SAFETY: the SSL made above, not yet shared.
                unsafe { (self.api.ssl_free)(ssl) };
            }
            return Err(self.api.last_error("SSL_new / BIO_new"));
        }
        // SAFETY: a live SSL and two live BIOs, whose ownership passes to the SSL (freed by
        // SSL_free); the SslConn keeps the pointers only while the SSL lives.
        unsafe { (self.api.ssl_set_bio)(ssl, rbio, wbio) };
        // SAFETY: a live SSL, before any I/O.
        unsafe { (self.api.ssl_set_accept_state)(ssl) };
        Ok(SslConn {
            tls: self,
            ssl,
            rbio,
            wbio,
        })
    }
}

impl Drop for Tls {
    fn drop(&mut self) {
        // SAFETY: the context this Tls owns; every SslConn borrowing it is gone (lifetimes), and
        // an SSL holds its own reference to its context anyway.
        unsafe { (self.api.ctx_free)(self.ctx) };
    }
}

/// What one TLS operation did.
pub enum Io {
    /// Moved this many bytes (a handshake step that completed: 0).
    Done(usize),
    /// Retry when the socket is readable / writable (the edge will come: OpenSSL saw EAGAIN).
    WantRead,
    WantWrite,
    /// The peer closed (close_notify or EOF) or the connection failed.
    Closed,
}

/// One server-side TLS connection and its two memory BIOs (owned by the SSL).
pub struct SslConn<'a> {
    tls: &'a Tls,
    ssl: *mut Ssl,
    /// Ciphertext from the peer, for OpenSSL to read.
    rbio: *mut Bio,
    /// Ciphertext OpenSSL wrote, for the socket.
    wbio: *mut Bio,
}

impl SslConn<'_> {
    /// Maps a return value `ret` of an SSL_* call to `Io` (SSL_get_error(3), right after it).
    fn outcome(&self, ret: c_int) -> Io {
        if ret > 0 {
            return Io::Done(ret as usize);
        }
        // SAFETY: a live SSL; called right after the operation that returned `ret`.
        match unsafe { (self.tls.api.ssl_get_error)(self.ssl, ret) } {
            SSL_ERROR_WANT_READ => Io::WantRead,
            SSL_ERROR_WANT_WRITE => Io::WantWrite,
            SSL_ERROR_ZERO_RETURN => Io::Closed,
            code @ (SSL_ERROR_SSL | SSL_ERROR_SYSCALL) => {
                // A failed connection leaves errors queued; drop them so they do not leak
                // into the next connection's SSL_get_error. Say what it was: a verifying
                // client that rejects the certificate shows up here.
                let why = self.tls.api.last_error("TLS error");
                if code == SSL_ERROR_SSL {
                    eprintln!("netfloor tls: {why}");
                }
                Io::Closed
            }
            _ => Io::Closed,
        }
    }

    /// One step of the server handshake: Done(0) once complete.
    pub fn handshake(&mut self) -> Io {
        // SAFETY: a live SSL in accept state.
        let ret = unsafe { (self.tls.api.ssl_do_handshake)(self.ssl) };
        if ret == 1 {
            Io::Done(0)
        } else {
            self.outcome(ret)
        }
    }

    /// Hands ciphertext received from the socket to OpenSSL (a memory BIO takes it all).
    pub fn feed(&mut self, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let len = (data.len() - done).min(c_int::MAX as usize) as c_int;
            // SAFETY: a live memory BIO; reads `len` bytes from data[done..], valid for them.
            let n =
                unsafe { (self.tls.api.bio_write)(self.rbio, data[done..].as_ptr().cast(), len) };
            if n <= 0 {
                return; // out of memory: the connection fails at the next read
            }
            done += n as usize;
        }
    }

    /// Appends the ciphertext OpenSSL has written (handshake, records, alerts) to `out`.
    pub fn take_output(&mut self, out: &mut Vec<u8>) {
        loop {
            out.reserve(64 * 1024);
            let spare = out.spare_capacity_mut();
            let len = spare.len().min(c_int::MAX as usize) as c_int;
            // SAFETY: a live memory BIO; writes at most `len` bytes into the spare capacity.
            let n = unsafe { (self.tls.api.bio_read)(self.wbio, spare.as_mut_ptr().cast(), len) };
            if n <= 0 {
                return; // empty (a memory BIO returns -1 with the retry flag)
            }
            // SAFETY: BIO_read initialised the first n bytes of the spare capacity.
            unsafe { out.set_len(out.len() + n as usize) };
        }
    }

    /// Decrypts into `buf` (at most one record's worth per call).
    pub fn read(&mut self, buf: &mut [u8]) -> Io {
        let len = buf.len().min(c_int::MAX as usize) as c_int;
        // SAFETY: writes at most `len` bytes into buf, which is valid for that many.
        let ret = unsafe { (self.tls.api.ssl_read)(self.ssl, buf.as_mut_ptr().cast(), len) };
        self.outcome(ret)
    }

    /// Encrypts `buf` into the output BIO (which grows: a memory BIO never says WANT_WRITE).
    pub fn write(&mut self, buf: &[u8]) -> Io {
        let len = buf.len().min(c_int::MAX as usize) as c_int;
        // SAFETY: reads at most `len` bytes from buf, which is valid for that many.
        let ret = unsafe { (self.tls.api.ssl_write)(self.ssl, buf.as_ptr().cast(), len) };
        self.outcome(ret)
    }
}

impl SslConn<'_> {
    /// Queues a close_notify alert (SSL_shutdown(3)), for `take_output`.
    pub fn shutdown(&mut self) {
        // SAFETY: a live SSL.
        unsafe { (self.tls.api.ssl_shutdown)(self.ssl) };
    }
}

impl Drop for SslConn<'_> {
    fn drop(&mut self) {
        // SAFETY: no arguments; errors a failed connection left queued must not reach the next
        // connection's SSL_get_error.
        unsafe { (self.tls.api.err_clear_error)() };
        // SAFETY: freed once, here, with its BIOs; no pointer to them outlives this value.
        unsafe { (self.tls.api.ssl_free)(self.ssl) };
    }
}
