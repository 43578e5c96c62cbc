//! Reading a JavaScript options object the same way for every builder call: each key must be one
//! the call knows (an unknown key, e.g. a misspelt `makeParent`, is `KILN_OPTION_INVALID` naming
//! it instead of being ignored), and each value must have the key's type (a wrong type is
//! `KILN_OPTION_INVALID` naming the key, the JS type given and what is accepted, instead of
//! napi's bare `ArrayExpected`). `undefined` and `null` mean "not given". The readers themselves
//! are core's, generated once for every language (`kiln::graph::builder`); this file holds only
//! the JS-side value conversions.

use crate::errors;
use crate::graph::{ExecState, Mount, State};
use kiln::graph as g;
use kiln::graph::named::{self, Call, Key};
use napi::bindgen_prelude::{ClassInstance, FromNapiValue, JsObjectValue, Object, Unknown};
use napi::{Env, JsValue, ValueType};
use std::collections::BTreeMap;

/// The options object of one call, checked against the keys that call accepts.
pub struct Reader<'e> {
    env: &'e Env,
    obj: Option<Object<'e>>,
}

/// An option error for `key` thrown as a KilnError.
pub fn invalid(env: &Env, key: &str, value: &str, expected: &str) -> napi::Error {
    errors::throw(env, &kiln::Error::option(key, value, expected))
}

fn type_name(v: &Unknown) -> &'static str {
    match v.get_type() {
        Ok(ValueType::Boolean) => "boolean",
        Ok(ValueType::Number) => "number",
        Ok(ValueType::String) => "string",
        Ok(ValueType::Object) => "object",
        Ok(ValueType::Function) => "function",
        Ok(ValueType::Symbol) => "symbol",
        Ok(ValueType::BigInt) => "bigint",
        _ => "value",
    }
}

impl<'e> Reader<'e> {
    /// Checks that every key of `obj` is one `call` accepts (camelCase JS names).
    pub fn new(env: &'e Env, obj: Option<Unknown<'e>>, call: &Call) -> napi::Result<Reader<'e>> {
        Self::with_keys(env, obj, call.name, &call.js_names())
    }

    /// Checks that every key of `obj` is in `known`.
    pub fn with_keys(env: &'e Env, obj: Option<Unknown<'e>>, call: &str, known: &[&str]) -> napi::Result<Reader<'e>> {
        let Some(u) = obj else { return Ok(Reader { env, obj: None }) };
        match u.get_type()? {
            ValueType::Undefined | ValueType::Null => return Ok(Reader { env, obj: None }),
            ValueType::Object => {}
            _ => return Err(invalid(env, "options", type_name(&u), &format!("an options object for {call}"))),
        }
        // SAFETY: the value was checked to be a JS object just above.
        let obj: Object<'e> = unsafe { u.cast()? };
        for key in Object::keys(&obj)? {
            if !known.contains(&key.as_str()) {
                return Err(invalid(
                    env,
                    &key,
                    "",
                    &format!("an option of {call}; unknown key (accepted: {})", known.join(", ")),
                ));
            }
        }
        Ok(Reader { env, obj: Some(obj) })
    }

    /// The raw value of `key`, `None` when absent, `undefined` or `null`.
    fn raw(&self, key: &str) -> napi::Result<Option<Unknown<'e>>> {
        let Some(obj) = &self.obj else { return Ok(None) };
        let v: Option<Unknown> = obj.get(key)?;
        Ok(v.filter(|v| !matches!(v.get_type(), Ok(ValueType::Undefined | ValueType::Null))))
    }

    /// The value of `key` converted to `T`, or `None` when not given.
    pub fn get<T: FromJs>(&self, key: &str) -> napi::Result<Option<T>> {
        match self.raw(key)? {
            None => Ok(None),
            Some(v) => T::from_js(self.env, key, v).map(Some),
        }
    }
}

/// An options object of a call whose options are a napi struct (`T`): keys the call does not
/// know are refused (KILN_OPTION_INVALID naming the key) before the struct is read, since napi
/// would silently ignore them. `undefined` and `null` are "no options".
pub fn strict<'e, T: FromNapiValue>(
    env: &'e Env,
    options: Option<Unknown<'e>>,
    call: &str,
    known: &[&str],
) -> napi::Result<Option<T>> {
    let Some(u) = options else { return Ok(None) };
    if matches!(u.get_type()?, ValueType::Undefined | ValueType::Null) {
        return Ok(None);
    }
    Reader::with_keys(env, Some(u), call, known)?;
    // SAFETY: `with_keys` checked that the value is a JS object; `T`'s conversion checks each
    // field's type.
    unsafe { u.cast::<T>() }.map(Some)
}

/// Opens the reader of `options` for a generated options reader (`kiln::graph::builder`).
pub fn open<'e>(env: &'e Env, options: Option<Unknown<'e>>) -> impl FnOnce(&'static Call) -> napi::Result<Reader<'e>> {
    move |call| Reader::new(env, options, call)
}

impl named::Reader for Reader<'_> {
    type Error = napi::Error;
}

impl<T: FromJs> named::Get<T> for Reader<'_> {
    fn get(&self, key: &Key) -> napi::Result<Option<T>> {
        Reader::get(self, key.js)
    }
}

/// A JS value of one option type, converted with errors naming the key.
pub trait FromJs: Sized {
    /// What is accepted, for errors (`a boolean`).
    const EXPECTED: &'static str;
    /// Converts `v` (never undefined or null).
    fn from_js(env: &Env, key: &str, v: Unknown) -> napi::Result<Self>;
}

fn typed<T: FromNapiValue>(env: &Env, key: &str, v: Unknown, want: ValueType, expected: &str) -> napi::Result<T> {
    if v.get_type()? != want {
        return Err(invalid(env, key, type_name(&v), expected));
    }
    // SAFETY: the JS type was checked to be the one `T` converts from.
    unsafe { v.cast::<T>() }.map_err(|_| invalid(env, key, type_name(&v), expected))
}

impl FromJs for bool {
    const EXPECTED: &'static str = "a boolean";
    fn from_js(env: &Env, key: &str, v: Unknown) -> napi::Result<Self> {
        typed(env, key, v, ValueType::Boolean, Self::EXPECTED)
    }
}

impl FromJs for String {
    const EXPECTED: &'static str = "a string";
    fn from_js(env: &Env, key: &str, v: Unknown) -> napi::Result<Self> {
        typed(env, key, v, ValueType::String, Self::EXPECTED)
    }
}

fn integer(env: &Env, key: &str, v: Unknown, min: f64, max: f64, expected: &str) -> napi::Result<f64> {
    let n: f64 = typed(env, key, v, ValueType::Number, expected)?;
    if n.fract() != 0.0 || n < min || n > max {
        return Err(invalid(env, key, &n.to_string(), expected));
    }
    Ok(n)
}

impl FromJs for u32 {
    const EXPECTED: &'static str = "an integer from 0 to 4294967295";
    fn from_js(env: &Env, key: &str, v: Unknown) -> napi::Result<Self> {
        Ok(integer(env, key, v, 0.0, u32::MAX as f64, Self::EXPECTED)? as u32)
    }
}

impl FromJs for u64 {
    const EXPECTED: &'static str = "an integer >= 0 (at most 2^53)";
    fn from_js(env: &Env, key: &str, v: Unknown) -> napi::Result<Self> {
        Ok(integer(env, key, v, 0.0, 9_007_199_254_740_992.0, Self::EXPECTED)? as u64)
    }
}

impl FromJs for i64 {
    const EXPECTED: &'static str = "an integer (at most 2^53 in magnitude)";
    fn from_js(env: &Env, key: &str, v: Unknown) -> napi::Result<Self> {
        Ok(integer(env, key, v, -9_007_199_254_740_992.0, 9_007_199_254_740_992.0, Self::EXPECTED)? as i64)
    }
}

fn array<'e>(env: &Env, key: &str, v: Unknown<'e>, expected: &str) -> napi::Result<Vec<Unknown<'e>>> {
    if v.get_type()? != ValueType::Object || !v.is_array()? {
        return Err(invalid(env, key, type_name(&v), expected));
    }
    // SAFETY: checked to be a JS array just above.
    let obj: Object = unsafe { v.cast()? };
    let len = obj.get_array_length()?;
    (0..len).map(|i| obj.get_element::<Unknown>(i)).collect()
}

impl FromJs for Vec<String> {
    const EXPECTED: &'static str = "an array of strings";
    fn from_js(env: &Env, key: &str, v: Unknown) -> napi::Result<Self> {
        array(env, key, v, Self::EXPECTED)?
            .into_iter()
            .map(|e| typed(env, key, e, ValueType::String, Self::EXPECTED))
            .collect()
    }
}

/// `{ KEY: 'value', ... }` in the object's own key order (JS keeps insertion order, so the same
/// code gives the same op digest as Python's dicts and C's calls).
impl FromJs for Vec<(String, String)> {
    const EXPECTED: &'static str = "an object of string values";
    fn from_js(env: &Env, key: &str, v: Unknown) -> napi::Result<Self> {
        if v.get_type()? != ValueType::Object || v.is_array()? {
            return Err(invalid(env, key, type_name(&v), Self::EXPECTED));
        }
        // SAFETY: checked to be a JS object just above.
        let obj: Object = unsafe { v.cast()? };
        let mut out = Vec::new();
        for k in Object::keys(&obj)? {
            let e: Unknown = obj.get(&k)?.ok_or_else(|| invalid(env, key, "undefined", Self::EXPECTED))?;
            out.push((k.clone(), typed(env, &format!("{key}.{k}"), e, ValueType::String, "a string")?));
        }
        Ok(out)
    }
}

impl FromJs for BTreeMap<String, String> {
    const EXPECTED: &'static str = "an object of string values";
    fn from_js(env: &Env, key: &str, v: Unknown) -> napi::Result<Self> {
        Ok(Vec::<(String, String)>::from_js(env, key, v)?.into_iter().collect())
    }
}

impl FromJs for g::Owner {
    const EXPECTED: &'static str = "a uid number or { uid, gid }";
    fn from_js(env: &Env, key: &str, v: Unknown) -> napi::Result<Self> {
        if v.get_type()? == ValueType::Number {
            let id = u32::from_js(env, key, v)?;
            return Ok(g::Owner { uid: id, gid: id });
        }
        let r = Reader::with_keys(env, Some(v), key, &["uid", "gid"])
            .map_err(|_| invalid(env, key, type_name(&v), Self::EXPECTED))?;
        let uid = r.get::<u32>("uid")?.ok_or_else(|| invalid(env, &format!("{key}.uid"), "", "a uid"))?;
        let gid = r.get::<u32>("gid")?.ok_or_else(|| invalid(env, &format!("{key}.gid"), "", "a gid"))?;
        Ok(g::Owner { uid, gid })
    }
}

impl FromJs for Vec<g::MountSpec> {
    const EXPECTED: &'static str = "an array of Mount (mount, cacheMount, tmpfsMount, secretMount)";
    fn from_js(env: &Env, key: &str, v: Unknown) -> napi::Result<Self> {
        array(env, key, v, Self::EXPECTED)?
            .into_iter()
            .map(|e| {
                // SAFETY: ClassInstance's conversion checks the wrapped class's type tag.
                unsafe { e.cast::<ClassInstance<Mount>>() }
                    .map(|m| m.inner.clone())
                    .map_err(|_| invalid(env, key, type_name(&e), Self::EXPECTED))
            })
            .collect()
    }
}

/// A `State` or an `ExecState` (its root), as every call taking a state accepts.
pub fn state_of(env: &Env, key: &str, v: Unknown) -> napi::Result<g::State> {
    // SAFETY: ClassInstance's conversion checks the wrapped class's type tag.
    if let Ok(s) = unsafe { v.cast::<ClassInstance<State>>() } {
        return Ok(s.inner.clone());
    }
    // SAFETY: as above.
    if let Ok(s) = unsafe { v.cast::<ClassInstance<ExecState>>() } {
        return Ok(s.inner.root());
    }
    Err(invalid(env, key, type_name(&v), "a State or an ExecState"))
}

macro_rules! parsed {
    ($t:ty, $expected:expr) => {
        impl FromJs for $t {
            const EXPECTED: &'static str = $expected;
            fn from_js(env: &Env, key: &str, v: Unknown) -> napi::Result<Self> {
                let s = String::from_js(env, key, v)?;
                s.parse().map_err(|e: kiln::Error| errors::throw(env, &e))
            }
        }
    };
}
parsed!(g::Network, "'sandbox', 'host' or 'none'");
parsed!(g::CacheSharing, "'shared', 'private' or 'locked'");
parsed!(g::Platform, "a platform such as 'linux/amd64' or 'local'");

impl FromJs for kiln::Digest {
    const EXPECTED: &'static str = "a digest like sha256:<64 hex digits>";
    fn from_js(env: &Env, key: &str, v: Unknown) -> napi::Result<Self> {
        let s = String::from_js(env, key, v)?;
        g::parse_digest(key, &s).map_err(|e| errors::throw(env, &e))
    }
}

/// The secrets of a solve: every value must be a `Secret` (`secretFile` / `secretValue`); a plain
/// string or Buffer is refused rather than guessed to be a path or a value. Errors name the id,
/// never the value.
pub fn secrets_of(env: &Env, obj: &Object) -> napi::Result<Vec<(String, kiln::options::SecretSource)>> {
    let mut out = Vec::new();
    for id in Object::keys(obj)? {
        let Some(v) = obj.get::<Unknown>(&id)? else { continue };
        // SAFETY: ClassInstance's conversion checks the wrapped class's type tag.
        match unsafe { v.cast::<ClassInstance<crate::graph::Secret>>() } {
            Ok(s) => out.push((id, s.inner.clone())),
            Err(_) => {
                return Err(invalid(
                    env,
                    "secrets",
                    &id,
                    &format!(
                        "secret {id:?} is a {}; give secretFile(path) or secretValue(data) so its meaning is explicit",
                        type_name(&v)
                    ),
                ))
            }
        }
    }
    Ok(out)
}
