//! The contract versions a component may speak (0.2 and 0.1): the hook
//! signatures of each, detecting which one a component exports, and calling
//! its functions through the right one.

use super::*;

/// The parameters and result of one hook export of the `guest` interface.
/// The result is lifted as `Wire` (lists bounded, see [`records`]) and
/// converted into `Value`.
pub(super) trait HookSignature {
    type Params<'a>: ComponentNamedList + Lower + Send + Sync;
    type Wire: Lift + Into<Self::Value> + Send + Sync + 'static;
    type Value: OutcomeName;
}

/// How a call ended, for its trace span.
pub(super) trait OutcomeName {
    fn outcome_name(&self) -> &'static str;
}

impl OutcomeName for Outcome {
    fn outcome_name(&self) -> &'static str {
        match self {
            Outcome::Continue(_) => "continue",
            Outcome::Respond(_) => "respond",
        }
    }
}

impl OutcomeName for AuthOutcome {
    fn outcome_name(&self) -> &'static str {
        match self {
            AuthOutcome::Authenticated(_) => "authenticated",
            AuthOutcome::Respond(_) => "respond",
        }
    }
}

impl OutcomeName for Response {
    fn outcome_name(&self) -> &'static str {
        "response"
    }
}

/// What a hook export returns: the plugin's value or its own error.
pub(super) type HookResult<T> = (Result<T, String>,);

/// 0.2: every hook takes the function's index and the input buffer.
pub(super) type Input<'a> = (u32, &'a [u8]);

pub(super) struct OnRequest;
impl HookSignature for OnRequest {
    type Params<'a> = Input<'a>;
    type Wire = OutcomeWire;
    type Value = Outcome;
}

pub(super) struct OnAuth;
impl HookSignature for OnAuth {
    type Params<'a> = Input<'a>;
    type Wire = AuthOutcomeWire;
    type Value = AuthOutcome;
}

pub(super) struct OnResponse;
impl HookSignature for OnResponse {
    type Params<'a> = Input<'a>;
    type Wire = ResponseWire;
    type Value = Response;
}

pub(super) struct OnRequest01;
impl HookSignature for OnRequest01 {
    type Params<'a> = (
        &'a str,
        &'a RequestRecord<'a>,
        &'a SessionRecord01<'a>,
        &'a Api,
        &'a str,
    );
    type Wire = OutcomeWire01;
    type Value = Outcome;
}

pub(super) struct OnAuth01;
impl HookSignature for OnAuth01 {
    type Params<'a> = (&'a str, &'a RequestRecord<'a>, &'a Api, &'a str);
    type Wire = AuthOutcomeWire01;
    type Value = AuthOutcome;
}

pub(super) struct OnResponse01;
impl HookSignature for OnResponse01 {
    type Params<'a> = (
        &'a str,
        &'a RequestRecord<'a>,
        &'a ResponseRecord<'a>,
        &'a SessionRecord01<'a>,
        &'a Api,
        &'a str,
    );
    type Wire = ResponseWire;
    type Value = Response;
}

/// A hook export, found and type-checked once at load, so that a call on a
/// fresh instance skips both (the check walks every record of the
/// signature: about 0.3 us per call).
pub(super) struct Hook<H> {
    pub(super) index: ComponentExportIndex,
    pub(super) _signature: std::marker::PhantomData<H>,
}

impl<H: HookSignature> Hook<H> {
    /// Checks the export's type against `H` on an instance of the component.
    pub(super) fn check(
        index: ComponentExportIndex,
        instance: &Instance,
        store: &mut Store<State>,
    ) -> wasmtime::Result<Self> {
        instance.get_typed_func::<H::Params<'_>, HookResult<H::Wire>>(&mut *store, &index)?;
        Ok(Hook {
            index,
            _signature: std::marker::PhantomData,
        })
    }

    /// The export on `instance`, an instance of the component it was
    /// checked on.
    #[expect(unsafe_code, reason = "skips a type check made at load; see the SAFETY note")]
    pub(super) fn func<'a>(
        &self,
        instance: &Instance,
        store: &mut Store<State>,
    ) -> wasmtime::Result<TypedFunc<H::Params<'a>, HookResult<H::Wire>>> {
        let func = instance
            .get_func(&mut *store, self.index)
            .ok_or_else(|| wasmtime::format_err!("the component has no hook export {:?}", self.index))?;
        // SAFETY: `check` type-checked this export as `H`'s signature on an
        // instance of the same pre-instantiated component, and every
        // instance of a component has the same export types.
        Ok(unsafe { TypedFunc::new_unchecked(func) })
    }
}

/// The hook entry points among the component's exports, by the contract
/// version it was built against.
pub(super) enum Contract {
    V02 {
        on_request: Hook<OnRequest>,
        on_auth: Hook<OnAuth>,
        on_response: Hook<OnResponse>,
    },
    V01 {
        on_request: Hook<OnRequest01>,
        on_auth: Hook<OnAuth01>,
        on_response: Hook<OnResponse01>,
    },
}

impl Contract {
    const GUEST: &str = "portcullis:plugin/guest@0.2.0";
    const GUEST_01: &str = "portcullis:plugin/guest@0.1.0";

    /// Finds the hooks in `instance`'s component, by the newest contract it
    /// exports, and checks their types.
    pub(super) fn check(instance: &Instance, store: &mut Store<State>) -> Result<Self, LoadErrorKind> {
        let (name, guest) = [Self::GUEST, Self::GUEST_01]
            .into_iter()
            .find_map(|name| Some((name, instance.get_export_index(&mut *store, None, name)?)))
            .ok_or_else(|| LoadErrorKind::Incompatible(format!("no export {} or {}", Self::GUEST, Self::GUEST_01)))?;
        let mut find = |export: &str| {
            instance
                .get_export_index(&mut *store, Some(&guest), export)
                .ok_or_else(|| LoadErrorKind::Incompatible(format!("no export {name}#{export}")))
        };
        let (on_request, on_auth, on_response) = (find("on-request")?, find("on-auth")?, find("on-response")?);
        let incompatible = |e: wasmtime::Error| LoadErrorKind::Incompatible(format!("{e:#}"));
        Ok(if name == Self::GUEST {
            Contract::V02 {
                on_request: Hook::check(on_request, instance, store).map_err(incompatible)?,
                on_auth: Hook::check(on_auth, instance, store).map_err(incompatible)?,
                on_response: Hook::check(on_response, instance, store).map_err(incompatible)?,
            }
        } else {
            Contract::V01 {
                on_request: Hook::check(on_request, instance, store).map_err(incompatible)?,
                on_auth: Hook::check(on_auth, instance, store).map_err(incompatible)?,
                on_response: Hook::check(on_response, instance, store).map_err(incompatible)?,
            }
        })
    }

    pub(super) fn guest(&self) -> &'static str {
        match self {
            Contract::V02 { .. } => Self::GUEST,
            Contract::V01 { .. } => Self::GUEST_01,
        }
    }

    /// The contract version, as the logs name it.
    pub(super) fn version(&self) -> &'static str {
        match self {
            Contract::V02 { .. } => "0.2",
            Contract::V01 { .. } => "0.1",
        }
    }

    const SCHEMAS: &str = "portcullis:plugin/schemas@0.2.0";

    /// The config schema each function declares (the optional `schemas`
    /// export of 0.2), compiled; all `None` without the export.
    pub(super) async fn config_schemas(
        &self,
        instance: &Instance,
        store: &mut Store<State>,
        functions: &[FunctionInfo],
    ) -> Result<Vec<Option<ConfigSchema>>, LoadErrorKind> {
        let export = match self {
            Contract::V02 { .. } => instance
                .get_export_index(&mut *store, None, Self::SCHEMAS)
                .and_then(|s| instance.get_export_index(&mut *store, Some(&s), "config-schemas")),
            Contract::V01 { .. } => None,
        };
        let Some(export) = export else {
            return Ok(functions.iter().map(|_| None).collect());
        };
        let (Bounded(schemas),) = instance
            .get_typed_func::<(), (Bounded<Option<String>>,)>(&mut *store, &export)
            .map_err(|e| LoadErrorKind::Incompatible(format!("{e:#}")))?
            .call_async(&mut *store, ())
            .await
            .map_err(describe_error)?;
        if schemas.len() != functions.len() {
            return Err(LoadErrorKind::Describe(format!(
                "it declares {} config schemas for {} functions",
                schemas.len(),
                functions.len()
            )));
        }
        schemas
            .into_iter()
            .zip(functions)
            .map(|(schema, function)| {
                schema
                    .map(ConfigSchema::compile)
                    .transpose()
                    .map_err(|why| LoadErrorKind::Describe(format!("function `{}`: {why}", function.name)))
            })
            .collect()
    }

    /// Lists the component's functions (a bounded list, like every list a
    /// guest returns).
    pub(super) async fn functions(
        &self,
        instance: &Instance,
        store: &mut Store<State>,
    ) -> Result<Vec<FunctionInfo>, LoadErrorKind> {
        let guest = self.guest();
        let index = instance
            .get_export_index(&mut *store, None, guest)
            .and_then(|g| instance.get_export_index(&mut *store, Some(&g), "functions"))
            .ok_or_else(|| LoadErrorKind::Incompatible(format!("no export {guest}#functions")))?;
        let incompatible = |e: wasmtime::Error| LoadErrorKind::Incompatible(format!("{e:#}"));
        Ok(match self {
            Contract::V02 { .. } => {
                let (Bounded(functions),) = instance
                    .get_typed_func::<(), (Bounded<FunctionInfo>,)>(&mut *store, &index)
                    .map_err(incompatible)?
                    .call_async(&mut *store, ())
                    .await
                    .map_err(describe_error)?;
                functions
            }
            Contract::V01 { .. } => {
                type Info01 = bindings::v01::portcullis::plugin::types::FunctionInfo;
                let (Bounded(functions),) = instance
                    .get_typed_func::<(), (Bounded<Info01>,)>(&mut *store, &index)
                    .map_err(incompatible)?
                    .call_async(&mut *store, ())
                    .await
                    .map_err(describe_error)?;
                functions.into_iter().map(Into::into).collect()
            }
        })
    }
}
