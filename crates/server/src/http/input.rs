//! What request DTOs are made of, and how their fields become domain types.
//!
//! A handler deserialises its body into a DTO ([`read_json`](super::read_json)), then runs each
//! field through one [`Validator`]: every bad field is recorded (one entry each, so a client
//! learns of every mistake in one round trip), and [`Validator::finish`] hands back the parsed
//! values, or the problems, at once. Fields that must be reported one entry per bad field even
//! when their JSON type is wrong (the `users` seed: `"lastName": 7`) are [`Lenient`].

use latchkey_core::code::OneTimeCode;
use latchkey_core::identity::ParseError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

/// One invalid field, in the surface's field naming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// The wire name of the field.
    pub field: String,
    /// What is wrong, starting with the field's name (`email must be a valid email address`).
    pub message: String,
}

/// A DTO field that never fails the body's deserialisation: absent or `null` is
/// [`Lenient::Missing`], a value of the wrong JSON type is [`Lenient::WrongType`], so the
/// [`Validator`] reports it as one field problem among the others instead of serde stopping
/// at the first. Use with `#[serde(default)]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Lenient<T> {
    /// Absent or `null`.
    #[default]
    Missing,
    /// A value of type `T`.
    Present(T),
    /// A value that is not a `T`.
    WrongType,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        if value.is_null() {
            return Ok(Lenient::Missing);
        }
        Ok(T::deserialize(value).map_or(Lenient::WrongType, Lenient::Present))
    }
}

/// A one-time code as clients send it: a JSON number (`123456`, the seeds' clients) or a
/// string of digits (`"123456"`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CodeInput {
    /// `123456`.
    #[schema(value_type = u64)]
    Number(serde_json::Number),
    /// `"123456"`.
    Text(String),
}

impl CodeInput {
    /// The code.
    ///
    /// # Errors
    /// A [`ParseError`] unless it is six decimal digits not starting with `0`.
    pub fn parse(&self) -> Result<OneTimeCode, ParseError> {
        match self {
            CodeInput::Number(n) => {
                n.as_u64().ok_or_else(|| ParseError("must be a 6-digit code".into())).and_then(OneTimeCode::from_number)
            }
            CodeInput::Text(s) => OneTimeCode::parse(s),
        }
    }
}

/// A value the [`Validator`] checked: only [`Validator::finish`] opens it, so a handler never
/// uses a field whose problem it has not reported.
#[derive(Debug)]
#[must_use]
pub struct Checked<T>(Option<T>);

/// Collects field problems while DTO fields are parsed into domain types.
#[derive(Debug, Default)]
pub struct Validator {
    problems: Vec<FieldProblem>,
}

impl Validator {
    /// Records a problem with `field` (the first one per field is kept).
    pub fn problem(&mut self, field: &str, message: impl Into<String>) {
        if !self.problems.iter().any(|p| p.field == field) {
            self.problems.push(FieldProblem { field: field.to_owned(), message: message.into() });
        }
    }

    /// Keeps a parse result, recording `"{field} {error}"` when it failed.
    pub fn check<T>(&mut self, field: &str, result: Result<T, ParseError>) -> Checked<T> {
        Checked(result.map_err(|e| self.problem(field, format!("{field} {e}"))).ok())
    }

    /// Parses an optional value; `None` stays `None` without a problem.
    pub fn optional<T>(
        &mut self,
        field: &str,
        value: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Checked<Option<T>> {
        match value {
            None => Checked(Some(None)),
            Some(v) => {
                let Checked(parsed) = self.check(field, parse(v));
                Checked(parsed.map(Some))
            }
        }
    }

    /// A required, non-blank string field parsed by `parse`: missing is `"{field} is
    /// required"`, blank `"{field} must not be empty"`, another JSON type `"{field} must be a
    /// string"`.
    pub fn required<T>(
        &mut self,
        field: &str,
        value: &Lenient<String>,
        parse: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Checked<T> {
        match value {
            Lenient::Missing => self.check(field, Err(ParseError("is required".into()))),
            Lenient::WrongType => self.check(field, Err(ParseError("must be a string".into()))),
            Lenient::Present(s) if s.trim().is_empty() => {
                self.check(field, Err(ParseError("must not be empty".into())))
            }
            Lenient::Present(s) => self.check(field, parse(s)),
        }
    }

    /// An optional string field parsed by `parse`: missing or `null` is `None`, another JSON
    /// type `"{field} must be a string"`.
    pub fn lenient_optional<T>(
        &mut self,
        field: &str,
        value: &Lenient<String>,
        parse: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Checked<Option<T>> {
        match value {
            Lenient::Missing => Checked(Some(None)),
            Lenient::WrongType => {
                let Checked(_) = self.check::<()>(field, Err(ParseError("must be a string".into())));
                Checked(None)
            }
            Lenient::Present(s) => self.optional(field, Some(s), parse),
        }
    }

    /// A required one-time code: missing is `"{field} is required"`, a JSON type other than a
    /// number or a string `"{field} must be a number"`.
    pub fn code(&mut self, field: &str, value: &Lenient<CodeInput>) -> Checked<OneTimeCode> {
        match value {
            Lenient::Missing => self.check(field, Err(ParseError("is required".into()))),
            Lenient::WrongType => self.check(field, Err(ParseError("must be a number".into()))),
            Lenient::Present(code) => self.check(field, code.parse()),
        }
    }

    /// The checked values, or every problem recorded.
    ///
    /// # Errors
    /// The problems, in the order found.
    pub fn finish<C: Collect>(self, checked: C) -> Result<C::Output, Vec<FieldProblem>> {
        if !self.problems.is_empty() {
            return Err(self.problems);
        }
        // A `Checked` is empty only when its problem was recorded, so this cannot fail; if it
        // ever did, the request is still refused as invalid rather than served.
        checked
            .collect()
            .ok_or_else(|| vec![FieldProblem { field: String::new(), message: "the request is invalid".into() }])
    }
}

/// [`Checked`] values that [`Validator::finish`] can open together: one, or a tuple of up to
/// eight.
pub trait Collect {
    /// The opened values.
    type Output;
    /// Opens every value; `None` if one is empty.
    fn collect(self) -> Option<Self::Output>;
}

impl<T> Collect for Checked<T> {
    type Output = T;
    fn collect(self) -> Option<T> {
        self.0
    }
}

macro_rules! collect_tuple {
    ($($name:ident),+) => {
        impl<$($name),+> Collect for ($(Checked<$name>,)+) {
            type Output = ($($name,)+);
            #[allow(non_snake_case)]
            fn collect(self) -> Option<Self::Output> {
                let ($($name,)+) = self;
                Some(($($name.0?,)+))
            }
        }
    };
}

collect_tuple!(A, B);
collect_tuple!(A, B, C);
collect_tuple!(A, B, C, D);
collect_tuple!(A, B, C, D, E);
collect_tuple!(A, B, C, D, E, F);
collect_tuple!(A, B, C, D, E, F, G);
collect_tuple!(A, B, C, D, E, F, G, H);

#[cfg(test)]
mod tests {
    use latchkey_core::identity::Email;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Dto {
        #[serde(default)]
        a: Lenient<String>,
        #[serde(default)]
        b: Lenient<String>,
        #[serde(default)]
        c: Lenient<String>,
        #[serde(default)]
        d: Lenient<String>,
        #[serde(default)]
        e: Lenient<String>,
        #[serde(default)]
        code: Lenient<CodeInput>,
    }

    fn dto(v: serde_json::Value) -> Dto {
        serde_json::from_value(v).expect("lenient fields never fail")
    }

    #[test]
    fn every_bad_field_is_reported_once_in_order() {
        let d = dto(serde_json::json!({"a": "", "b": 3, "c": "ok@example.com", "e": [], "code": true}));
        let mut v = Validator::default();
        let a = v.required("a", &d.a, |s| Ok(s.to_owned()));
        let b = v.required("b", &d.b, |s| Ok(s.to_owned()));
        let c = v.required("c", &d.c, Email::parse);
        let dd = v.required("d", &d.d, |s| Ok(s.to_owned()));
        let e = v.lenient_optional("e", &d.e, |s| Ok(s.to_owned()));
        let code = v.code("code", &d.code);
        let problems = v.finish((a, b, c, dd, e, code)).expect_err("problems");
        let got: Vec<(&str, &str)> = problems.iter().map(|p| (p.field.as_str(), p.message.as_str())).collect();
        assert_eq!(
            got,
            [
                ("a", "a must not be empty"),
                ("b", "b must be a string"),
                ("d", "d is required"),
                ("e", "e must be a string"),
                ("code", "code must be a number"),
            ]
        );
    }

    #[test]
    fn finish_hands_back_the_parsed_values() {
        let d = dto(serde_json::json!({"c": "Ok@Example.com", "code": 123_456}));
        let mut v = Validator::default();
        let email = v.required("c", &d.c, Email::parse);
        let missing = v.lenient_optional("e", &d.e, |s| Ok(s.to_owned()));
        let code = v.code("code", &d.code);
        let (email, missing, code) = v.finish((email, missing, code)).expect("valid");
        assert_eq!(email.normalized(), "ok@example.com");
        assert_eq!(missing, None);
        assert_eq!(code.digits(), "123456");
    }

    #[test]
    fn codes_come_as_numbers_or_digit_strings() {
        let parse = |v: serde_json::Value| serde_json::from_value::<CodeInput>(v).expect("input").parse();
        assert_eq!(parse(serde_json::json!(654_321)).expect("number").digits(), "654321");
        assert_eq!(parse(serde_json::json!("654321")).expect("string").digits(), "654321");
        assert!(parse(serde_json::json!(-1)).is_err());
        assert!(parse(serde_json::json!(1.5)).is_err());
        assert!(parse(serde_json::json!("12345")).is_err());
        assert!(parse(serde_json::json!(12_345)).is_err());
    }
}
