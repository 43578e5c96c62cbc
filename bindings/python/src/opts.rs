//! Reading a call's `**options` the same way for every builder call: each key must be one the
//! call knows (an unknown key, e.g. a misspelt `make_parent`, is `kiln.OptionError` naming it),
//! and each value must have the key's type (a wrong type is `kiln.OptionError` naming the key,
//! the Python type given and what is accepted). `None` means "not given". The readers themselves
//! are core's, generated once for every language (`kiln::graph::builder`); this file holds only
//! the Python-side value conversions.

use crate::errors::to_pyerr;
use crate::graph::{state_of, PyMount};
use kiln::graph as g;
use kiln::graph::named::{self, Call, Key};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyString, PyTuple};
use std::collections::BTreeMap;

/// An option error for `key` raised as `kiln.OptionError`.
pub fn invalid(key: &str, value: &str, expected: &str) -> PyErr {
    Python::attach(|py| to_pyerr(py, &kiln::Error::option(key, value, expected)))
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// The `**options` of one call, checked against the keys that call accepts.
pub struct Reader<'a, 'py> {
    dict: Option<&'a Bound<'py, PyDict>>,
}

impl<'a, 'py> Reader<'a, 'py> {
    /// Checks that every key of `dict` is one `call` accepts.
    pub fn new(dict: Option<&'a Bound<'py, PyDict>>, call: &Call) -> PyResult<Reader<'a, 'py>> {
        let known = call.names();
        let call = call.name;
        if let Some(d) = dict {
            for k in d.keys() {
                let k: String = k.extract()?;
                if !known.contains(&k.as_str()) {
                    return Err(invalid(
                        &k,
                        "",
                        &format!("an option of {call}; unknown key (accepted: {})", known.join(", ")),
                    ));
                }
            }
        }
        Ok(Reader { dict })
    }

    /// The value of `key` converted to `T`, or `None` when absent or `None`.
    pub fn get<T: FromPy>(&self, key: &str) -> PyResult<Option<T>> {
        let Some(d) = self.dict else { return Ok(None) };
        match d.get_item(key)? {
            Some(v) if !v.is_none() => T::from_py(key, &v).map(Some),
            _ => Ok(None),
        }
    }
}

/// Opens the reader of `options` for a generated options reader (`kiln::graph::builder`).
pub fn open<'a, 'py>(
    options: Option<&'a Bound<'py, PyDict>>,
) -> impl FnOnce(&'static Call) -> PyResult<Reader<'a, 'py>> {
    move |call| Reader::new(options, call)
}

impl named::Reader for Reader<'_, '_> {
    type Error = PyErr;
}

impl<T: FromPy> named::Get<T> for Reader<'_, '_> {
    fn get(&self, key: &Key) -> PyResult<Option<T>> {
        Reader::get(self, key.name)
    }
}

/// A Python value of one option type, converted with errors naming the key.
pub trait FromPy: Sized {
    /// Converts `v` (never `None`).
    fn from_py(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Self>;
}

impl FromPy for bool {
    fn from_py(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Self> {
        v.cast::<PyBool>().map(|b| b.is_true()).map_err(|_| invalid(key, &type_name(v), "a bool"))
    }
}

impl FromPy for String {
    fn from_py(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Self> {
        match v.cast::<PyString>() {
            Ok(s) => Ok(s.to_str()?.to_owned()),
            Err(_) => Err(invalid(key, &type_name(v), "a str")),
        }
    }
}

fn int<'a, 'py, T: FromPyObject<'a, 'py>>(key: &str, v: &'a Bound<'py, PyAny>, expected: &str) -> PyResult<T> {
    // bool is an int subclass in Python; `mode=True` is a mistake, not 1.
    if v.is_instance_of::<PyBool>() || !v.is_instance_of::<PyInt>() {
        return Err(invalid(key, &type_name(v), expected));
    }
    v.extract::<T>().map_err(|_| invalid(key, &v.to_string(), expected))
}

impl FromPy for u32 {
    fn from_py(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Self> {
        int(key, v, "an int from 0 to 4294967295")
    }
}

impl FromPy for u64 {
    fn from_py(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Self> {
        int(key, v, "an int >= 0")
    }
}

impl FromPy for i64 {
    fn from_py(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Self> {
        int(key, v, "an int (64-bit)")
    }
}

/// The items of a list or tuple (a str is refused: it is a sequence of characters).
fn items<'py>(key: &str, v: &Bound<'py, PyAny>, expected: &str) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if let Ok(l) = v.cast::<PyList>() {
        return Ok(l.iter().collect());
    }
    if let Ok(t) = v.cast::<PyTuple>() {
        return Ok(t.iter().collect());
    }
    Err(invalid(key, &type_name(v), expected))
}

impl FromPy for Vec<String> {
    fn from_py(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Self> {
        let expected = "a list of str";
        items(key, v, expected)?
            .iter()
            .map(|e| String::from_py(key, e).map_err(|_| invalid(key, &type_name(e), expected)))
            .collect()
    }
}

/// A dict (in its order) or a list of `(key, value)` pairs.
impl FromPy for Vec<(String, String)> {
    fn from_py(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Self> {
        let expected = "a dict of str to str or a list of (str, str) pairs";
        if let Ok(d) = v.cast::<PyDict>() {
            return d
                .iter()
                .map(|(k, x)| Ok((String::from_py(key, &k)?, String::from_py(&format!("{key}.{k}"), &x)?)))
                .collect();
        }
        items(key, v, expected)?
            .iter()
            .map(|p| p.extract::<(String, String)>().map_err(|_| invalid(key, &type_name(p), expected)))
            .collect()
    }
}

impl FromPy for BTreeMap<String, String> {
    fn from_py(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(Vec::<(String, String)>::from_py(key, v)?.into_iter().collect())
    }
}

impl FromPy for g::Owner {
    fn from_py(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Self> {
        let expected = "an int or a (uid, gid) tuple";
        if v.is_instance_of::<PyInt>() && !v.is_instance_of::<PyBool>() {
            let id = u32::from_py(key, v)?;
            return Ok(g::Owner { uid: id, gid: id });
        }
        let t = v.cast::<PyTuple>().map_err(|_| invalid(key, &type_name(v), expected))?;
        if t.len() != 2 {
            return Err(invalid(key, &format!("a {}-tuple", t.len()), expected));
        }
        Ok(g::Owner { uid: u32::from_py(key, &t.get_item(0)?)?, gid: u32::from_py(key, &t.get_item(1)?)? })
    }
}

impl FromPy for Vec<g::MountSpec> {
    fn from_py(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Self> {
        let expected = "a list of kiln.Mount (mount, cache_mount, tmpfs_mount, secret_mount)";
        items(key, v, expected)?
            .iter()
            .map(|m| {
                m.cast::<PyMount>().map(|m| m.get().inner.clone()).map_err(|_| invalid(key, &type_name(m), expected))
            })
            .collect()
    }
}

impl FromPy for g::State {
    fn from_py(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Self> {
        state_of(v).map_err(|_| invalid(key, &type_name(v), "a kiln.State or kiln.ExecState"))
    }
}

macro_rules! parsed {
    ($t:ty) => {
        impl FromPy for $t {
            fn from_py(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Self> {
                let s = String::from_py(key, v)?;
                s.parse().map_err(|e: kiln::Error| Python::attach(|py| to_pyerr(py, &e)))
            }
        }
    };
}
parsed!(g::Network);
parsed!(g::CacheSharing);
parsed!(g::Platform);

impl FromPy for kiln::Digest {
    fn from_py(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Self> {
        let s = String::from_py(key, v)?;
        g::parse_digest(key, &s).map_err(|e| Python::attach(|py| to_pyerr(py, &e)))
    }
}
