//! The engine, once per process: wasmtime's configuration with the
//! pooling allocator and the epoch ticker, the linker with the host
//! functions, and the compiled components shared across reloads. Loading a
//! plugin reference happens here.

use super::*;

/// A compiled component, pre-instantiated, with the functions it exports.
pub(super) struct LoadedComponent {
    pub(super) pre: InstancePre<State>,
    pub(super) exports: Contract,
    pub(super) functions: Vec<FunctionInfo>,
    /// The schema each function declares for its `config`, by index.
    pub(super) schemas: Vec<Option<ConfigSchema>>,
    /// The SHA-256 of its bytes, in hex.
    pub(super) hash: String,
}

/// `PORTCULLIS_PERF_MAP=1`: write a perf map of compiled plugin code.
pub(super) fn perf_map_requested() -> bool {
    std::env::var_os("PORTCULLIS_PERF_MAP").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Engine, linker and compiled components; one per process.
pub struct PluginRuntime {
    pub(super) engine: Engine,
    pub(super) linker: Linker<State>,
    pub(super) cache_dir: Option<PathBuf>,
    pub(super) components: Mutex<HashMap<[u8; 32], Arc<LoadedComponent>>>,
    pub(super) slots: Arc<Semaphore>,
    pub(super) pool_size: u32,
    /// Largest memory any instance may have (the pool's slot size).
    pub(super) max_memory_bytes: usize,
    pub(super) client: OutboundClient,
    pub(super) ticker: Ticker,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("cache_dir", &self.cache_dir)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

impl PluginRuntime {
    /// Creates the engine sized by the gateway-wide `limits` and starts the
    /// epoch ticker. `cache_dir` holds compiled components across restarts.
    pub fn new(limits: &Limits, cache_dir: Option<PathBuf>, client: OutboundClient) -> anyhow::Result<Self> {
        let pool_size = limits.pool_size;
        let mut pool = PoolingAllocationConfig::default();
        // A wasip2 Rust component instantiates three core modules.
        pool.total_component_instances(pool_size)
            .total_core_instances(pool_size.saturating_mul(3))
            .total_memories(pool_size.saturating_mul(2))
            .total_tables(pool_size.saturating_mul(3))
            .max_memory_size(limits.memory_bytes)
            // Keep a little memory resident between instances instead of
            // returning it to the kernel each time (it is still zeroed).
            .linear_memory_keep_resident(256 << 10)
            .table_keep_resident(64 << 10);
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if perf_map_requested() {
            // Names plugin code for `perf` (/tmp/perf-PID.map): without it a
            // profile shows guest time as anonymous `[JIT]` addresses.
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e}"))?;

        let ticker = Ticker::start(&engine, EPOCH_TICK)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("{e}"))?;
        bindings::v02::Plugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        bindings::v01::Plugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("{e}"))?;

        Ok(PluginRuntime {
            engine,
            linker,
            cache_dir,
            components: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(pool_size as usize)),
            pool_size,
            max_memory_bytes: limits.memory_bytes,
            client,
            ticker,
        })
    }

    /// Plugin instance slots in all (`plugin_limits.pool_size` at start).
    pub fn pool_size(&self) -> u32 {
        self.pool_size
    }

    /// Plugin instance slots in use, of `pool_size` (idle reused instances
    /// hold theirs).
    pub fn instances_in_use(&self) -> u32 {
        let free = u32::try_from(self.slots.available_permits()).unwrap_or(u32::MAX);
        self.pool_size.saturating_sub(free)
    }

    /// Loads the plugin a reference of API `api` names, for a hook of kind
    /// `expected`. Components are compiled once per content hash and shared.
    pub async fn load(
        self: &Arc<Self>,
        reference: &PluginRef,
        expected: HookKind,
        api: &str,
    ) -> Result<Plugin, LoadError> {
        let err = |kind| LoadError {
            file: reference.file.clone(),
            field: reference.field.clone(),
            plugin: match &reference.oci {
                Some(oci) => oci.pinned(),
                None => reference.path.display().to_string(),
            },
            kind,
        };
        let component = self.component(&reference.path, reference.sha256).await.map_err(err)?;
        let found = component
            .functions
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == reference.function);
        let Some((index, info)) = found else {
            return Err(err(LoadErrorKind::UnknownFunction {
                function: reference.function.clone(),
                available: component.functions.iter().map(|f| f.name.clone()).collect(),
            }));
        };
        if info.kind != expected {
            return Err(err(LoadErrorKind::WrongKind {
                function: reference.function.clone(),
                actual: info.kind,
                expected,
            }));
        }
        if let Some(schema) = &component.schemas[index] {
            let violations = schema.violations(&reference.config_json);
            if !violations.is_empty() {
                let text = tokio::fs::read_to_string(&reference.file).await.unwrap_or_default();
                let violations = violations
                    .into_iter()
                    .map(|v| {
                        let field = format!("{}.config{}", reference.field, v.path);
                        (crate::config::locate_field(&text, &field), v)
                    })
                    .collect();
                return Err(err(LoadErrorKind::Config {
                    function: reference.function.clone(),
                    violations,
                }));
            }
        }
        if reference.fan_out.is_some() && matches!(component.exports, Contract::V01 { .. }) {
            return Err(err(LoadErrorKind::FanOutNeeds02));
        }
        let label: Arc<str> = format!("{}#{}", reference.name(), reference.function).into();
        let digest: Arc<str> = match reference.oci.as_ref().and_then(|o| o.manifest.as_deref()) {
            Some(manifest) => manifest.into(),
            None => format!("sha256:{}", component.hash).into(),
        };
        let ran: Arc<str> = format!("{label}@{digest}").into();
        Ok(Plugin {
            runtime: Arc::clone(self),
            wants_body: info.wants_body,
            component,
            metrics: Arc::new(PluginMetrics::new(api, &label)),
            label,
            function: reference.function.clone(),
            index: u32::try_from(index).unwrap_or(u32::MAX),
            config_json: reference.config_json.clone(),
            limits: reference.limits.clone(),
            on_error: reference.on_error,
            fallback: reference.fallback.clone(),
            source: reference.source().into(),
            ran,
            digest,
            fan_out: reference.fan_out.clone(),
            reuse: (reference.reuse > 1).then(|| Reuse {
                max_calls: reference.reuse,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    pub(super) async fn component(
        self: &Arc<Self>,
        path: &Path,
        pinned: Option<[u8; 32]>,
    ) -> Result<Arc<LoadedComponent>, LoadErrorKind> {
        let bytes = tokio::fs::read(path).await.map_err(LoadErrorKind::Read)?;
        let hash = cache::content_hash(&bytes);
        if let Some(expected) = pinned
            && expected != hash
        {
            return Err(LoadErrorKind::Digest {
                expected: hex(&expected),
                actual: hex(&hash),
            });
        }
        if let Some(loaded) = self.lock_components().get(&hash) {
            return Ok(Arc::clone(loaded));
        }
        // Compiling takes tens of milliseconds of CPU: keep it off the
        // request-serving threads.
        let runtime = Arc::clone(self);
        let component = tokio::task::spawn_blocking(move || {
            cache::load_or_compile(&runtime.engine, runtime.cache_dir.as_deref(), &bytes, &hash)
        })
        .await
        .map_err(|e| LoadErrorKind::Compile(e.to_string()))?
        .map_err(|e| LoadErrorKind::Compile(format!("{e:#}")))?;
        let pre = self.pre_instantiate(&component)?;
        let (exports, functions, schemas) = self.describe(&pre).await?;
        tracing::info!(
            path = %path.display(),
            contract = exports.version(),
            functions = functions.len(),
            "plugin component loaded"
        );
        let loaded = Arc::new(LoadedComponent {
            pre,
            exports,
            functions,
            schemas,
            hash: hex(&hash),
        });
        self.lock_components().insert(hash, Arc::clone(&loaded));
        Ok(loaded)
    }

    pub(super) fn lock_components(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<LoadedComponent>>> {
        lock(&self.components)
    }

    pub(super) fn pre_instantiate(&self, component: &Component) -> Result<InstancePre<State>, LoadErrorKind> {
        self.linker
            .instantiate_pre(component)
            .map_err(|e| LoadErrorKind::Incompatible(format!("{e:#}")))
    }

    /// Instantiates the component once to check its hook exports and ask
    /// which functions it offers and what config each accepts.
    pub(super) async fn describe(&self, pre: &InstancePre<State>) -> Result<Description, LoadErrorKind> {
        let limits = Limits {
            cpu: LOAD_CPU,
            timeout: LOAD_TIMEOUT,
            memory_bytes: self.max_memory_bytes,
            max_outbound_calls: 0,
            ..Limits::default()
        };
        let call = CallInfo {
            plugin: "(loading)".into(),
            api_id: "".into(),
            request_id: RequestId::none(),
            trace: TraceContext::default(),
            outbound: Arc::new(OutboundPolicy::default()),
            client: self.client.clone(),
            limits,
            calls_made: 0,
            metrics: None,
        };
        // Wait for a free instance slot: loading may overlap with traffic.
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| LoadErrorKind::Describe(e.to_string()))?;
        let mut store = self.store(call);
        let _running = self.ticker.running();
        let describe = async {
            let instance = pre.instantiate_async(&mut store).await.map_err(describe_error)?;
            let exports = Contract::check(&instance, &mut store)?;
            let functions = exports.functions(&instance, &mut store).await?;
            untrusted::check_functions(&functions).map_err(LoadErrorKind::Describe)?;
            let schemas = exports.config_schemas(&instance, &mut store, &functions).await?;
            Ok((exports, functions, schemas))
        };
        match tokio::time::timeout(LOAD_TIMEOUT, describe).await {
            Ok(result) => result,
            Err(_) => Err(LoadErrorKind::Describe(format!(
                "timed out after {LOAD_TIMEOUT:?} (the load-time limit)"
            ))),
        }
    }

    pub(super) fn store(&self, call: CallInfo) -> Store<State> {
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(call.limits.memory_bytes.min(self.max_memory_bytes))
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(&self.engine, State::new(call, store_limits));
        store.limiter(|state| &mut state.limits);
        // A new store's deadline is 0 and instantiation runs guest code: arm
        // it first. Each tick we check the guest's own running time (waits
        // excluded) and yield to the executor so other requests run.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| match ctx.data_mut().clock.tick() {
            Tick::Continue => Ok(UpdateDeadline::Continue(1)),
            Tick::Yield(resume) => Ok(UpdateDeadline::YieldCustom(1, resume)),
            Tick::OverBudget => Err(wasmtime::Error::new(CpuBudgetExceeded)),
        });
        store
    }
}
