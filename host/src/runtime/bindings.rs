//! Host bindings generated from the WIT contract in `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
});
