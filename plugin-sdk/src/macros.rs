//! The [`plugin!`](crate::plugin) macro.

/// Registers a plugin's functions by the names operators use in `function:`.
///
/// Each line is `KIND "name" => path::to::function`, where KIND is
///
/// | kind | signature | serves |
/// |---|---|---|
/// | `request` | `fn(&Request, &Context) -> Result<Outcome>` | endpoints; `pre`, `post_auth`, `post` hooks |
/// | `auth` | `fn(&Request, &Context) -> Result<AuthOutcome>` | the `auth` hook |
/// | `response` | `fn(&Request, Response, &Context) -> Result<Response>` | the `response` hook |
///
/// Write `request(body)` (or `auth(body)`) when the function reads the
/// request body; otherwise the gateway does not buffer it and
/// `request.body()` is `None`. `response(body)` asks for the response's body
/// (otherwise it streams past and `response.body` is empty); a response
/// function's `request.body()` is always `None`.
///
/// Add `: Type` after a function to declare the type of its `config`
/// (`request "limit" => limit: LimitConfig`). The type derives
/// [`schemars::JsonSchema`](https://docs.rs/schemars) as well as
/// `Deserialize`; the gateway then checks every plugin reference's `config`
/// against its JSON Schema when it loads a configuration, so a typo in the
/// YAML is a load error with file and line, not a failure at the first
/// request. Read it in the function with
/// [`ctx.config::<Type>()`](crate::Context::config).
///
/// Use the macro once per plugin crate. A function whose signature does not
/// match its kind is a compile error pointing at its name here.
///
/// ```no_run
/// use portcullis_sdk::{plugin, Context, Outcome, Request, Result};
///
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// #[serde(deny_unknown_fields)]
/// struct Limit { max_bytes: u32 }
///
/// fn allow(_: &Request, _: &Context) -> Result<Outcome> { Ok(Outcome::proceed()) }
/// fn inspect(req: &Request, _: &Context) -> Result<Outcome> {
///     let _body: serde_json::Value = req.json()?;
///     Ok(Outcome::proceed())
/// }
/// fn limit(req: &Request, ctx: &Context) -> Result<Outcome> {
///     let limit: Limit = ctx.config()?;
///     let _small = req.body().map_or(0, <[u8]>::len) <= limit.max_bytes as usize;
///     Ok(Outcome::proceed())
/// }
///
/// plugin! {
///     request "allow" => allow,
///     request(body) "inspect" => inspect,
///     request(body) "limit" => limit: Limit,
/// }
/// ```
#[macro_export]
macro_rules! plugin {
    ($( $kind:ident $( ( $opt:ident ) )? $name:literal => $func:path $( : $config:ty )? ),+ $(,)?) => {
        #[doc(hidden)]
        struct __PortcullisPlugin;

        #[doc(hidden)]
        static __PORTCULLIS_FUNCTIONS: &[$crate::__rt::Entry] = &[
            $( $crate::__rt::Entry {
                schema: $crate::__plugin_schema!($( $config )?),
                ..$crate::__plugin_entry!($kind $( ($opt) )? $name => $func)
            } ),+
        ];

        impl $crate::__rt::Guest for __PortcullisPlugin {
            fn functions() -> ::std::vec::Vec<$crate::bindings::portcullis::plugin::types::FunctionInfo> {
                $crate::__rt::functions(__PORTCULLIS_FUNCTIONS)
            }
            fn on_request(
                function: u32,
                input: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<$crate::Outcome, ::std::string::String> {
                $crate::__rt::on_request(__PORTCULLIS_FUNCTIONS, function, input)
            }
            fn on_auth(
                function: u32,
                input: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<$crate::AuthOutcome, ::std::string::String> {
                $crate::__rt::on_auth(__PORTCULLIS_FUNCTIONS, function, input)
            }
            fn on_response(
                function: u32,
                input: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<$crate::Response, ::std::string::String> {
                $crate::__rt::on_response(__PORTCULLIS_FUNCTIONS, function, input)
            }
        }

        impl $crate::__rt::Schemas for __PortcullisPlugin {
            fn config_schemas() -> ::std::vec::Vec<::std::option::Option<::std::string::String>> {
                $crate::__rt::config_schemas(__PORTCULLIS_FUNCTIONS)
            }
        }

        $crate::bindings::__export_guest!(__PortcullisPlugin);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __plugin_entry {
    (request $name:literal => $func:path) => { $crate::__plugin_entry!(@ Request, false, $name, $func) };
    (request(body) $name:literal => $func:path) => { $crate::__plugin_entry!(@ Request, true, $name, $func) };
    (auth $name:literal => $func:path) => { $crate::__plugin_entry!(@ Auth, false, $name, $func) };
    (auth(body) $name:literal => $func:path) => { $crate::__plugin_entry!(@ Auth, true, $name, $func) };
    (response $name:literal => $func:path) => { $crate::__plugin_entry!(@ Response, false, $name, $func) };
    (response(body) $name:literal => $func:path) => { $crate::__plugin_entry!(@ Response, true, $name, $func) };
    (@ $variant:ident, $body:literal, $name:literal, $func:path) => {
        $crate::__rt::Entry { name: $name, wants_body: $body, handler: $crate::__rt::Handler::$variant($func), schema: None }
    };
    ($kind:ident $( ($opt:ident) )? $name:literal => $func:path) => {
        ::std::compile_error!(::std::concat!(
            "unknown plugin function kind `", ::std::stringify!($kind $(($opt))?),
            "`: expected `request`, `auth` or `response`, optionally with `(body)`"
        ))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __plugin_schema {
    () => {
        None
    };
    ($config:ty) => {
        Some($crate::__rt::schema::<$config> as fn() -> ::std::string::String)
    };
}
