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
/// `request.body` is `None`. `response(body)` asks for the response's body
/// (otherwise it streams past and `response.body` is empty); a response
/// function's `request.body` is always `None`.
///
/// Use the macro once per plugin crate. A function whose signature does not
/// match its kind is a compile error pointing at its name here.
///
/// ```no_run
/// use portcullis_sdk::{plugin, Context, Outcome, Request, Result};
///
/// fn allow(_: &Request, _: &Context) -> Result<Outcome> { Ok(Outcome::proceed()) }
/// fn inspect(req: &Request, _: &Context) -> Result<Outcome> {
///     let _body: serde_json::Value = req.json()?;
///     Ok(Outcome::proceed())
/// }
///
/// plugin! {
///     request "allow" => allow,
///     request(body) "inspect" => inspect,
/// }
/// ```
#[macro_export]
macro_rules! plugin {
    ($( $kind:ident $( ( $opt:ident ) )? $name:literal => $func:path ),+ $(,)?) => {
        #[doc(hidden)]
        struct __PortcullisPlugin;

        #[doc(hidden)]
        static __PORTCULLIS_FUNCTIONS: &[$crate::__rt::Entry] = &[
            $( $crate::__plugin_entry!($kind $( ($opt) )? $name => $func) ),+
        ];

        impl $crate::__rt::Guest for __PortcullisPlugin {
            fn functions() -> ::std::vec::Vec<$crate::bindings::portcullis::plugin::types::FunctionInfo> {
                $crate::__rt::functions(__PORTCULLIS_FUNCTIONS)
            }
            fn on_request(
                function: ::std::string::String,
                request: $crate::Request,
                session: $crate::Session,
                api: $crate::Api,
                config: ::std::string::String,
            ) -> ::std::result::Result<$crate::Outcome, ::std::string::String> {
                $crate::__rt::on_request(__PORTCULLIS_FUNCTIONS, function, request, session, api, config)
            }
            fn on_auth(
                function: ::std::string::String,
                request: $crate::Request,
                api: $crate::Api,
                config: ::std::string::String,
            ) -> ::std::result::Result<$crate::AuthOutcome, ::std::string::String> {
                $crate::__rt::on_auth(__PORTCULLIS_FUNCTIONS, function, request, api, config)
            }
            fn on_response(
                function: ::std::string::String,
                request: $crate::Request,
                response: $crate::Response,
                session: $crate::Session,
                api: $crate::Api,
                config: ::std::string::String,
            ) -> ::std::result::Result<$crate::Response, ::std::string::String> {
                $crate::__rt::on_response(__PORTCULLIS_FUNCTIONS, function, request, response, session, api, config)
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
        $crate::__rt::Entry { name: $name, wants_body: $body, handler: $crate::__rt::Handler::$variant($func) }
    };
    ($kind:ident $( ($opt:ident) )? $name:literal => $func:path) => {
        ::std::compile_error!(::std::concat!(
            "unknown plugin function kind `", ::std::stringify!($kind $(($opt))?),
            "`: expected `request`, `auth` or `response`, optionally with `(body)`"
        ))
    };
}
