//! Every released contract, linked onto any host that answers the current
//! one: the capabilities themselves (in-process), or the worker's
//! forwarder, which hands each call to the parent. Old contracts go through
//! [`Old`], whose shims only change the values' package.

use crate::runtime::bindings::{self, current::doctor::plugin as now};
use crate::runtime::PluginState;
use std::marker::PhantomData;
use wasmtime::component::{HasData, Linker};

/// `CurrentContract`: a host of every interface listed, each once.
macro_rules! current_contract {
    ($($interface:ident),*) => {
        /// A host of the current contract: every interface of `doctor:plugin@0.3.0`.
        pub trait CurrentContract: $(now::$interface::Host +)* Send + 'static {}
        impl<T: $(now::$interface::Host +)* Send + 'static> CurrentContract for T {}
    };
}

current_contract!(types, host, processes, files, sqlite, database, sockets, probe, containers);

/// The current host seen through an older contract's imports.
pub struct Old<'a, H>(pub &'a mut H);

/// Routes the current contract's imports to the host itself.
struct Current<H>(PhantomData<H>);
impl<H: 'static> HasData for Current<H> {
    type Data<'a> = &'a mut H;
}

/// Routes an old contract's imports to the host through [`Old`].
struct Older<H>(PhantomData<H>);
impl<H: 'static> HasData for Older<H> {
    type Data<'a> = Old<'a, H>;
}

/// Add the imports of every contract this doctor links, so that plugins
/// built against an old one load.
pub fn all_contracts<H: CurrentContract>(
    linker: &mut Linker<PluginState<H>>,
) -> wasmtime::Result<()> {
    bindings::current::Plugin::add_to_linker::<PluginState<H>, Current<H>>(
        linker,
        PluginState::host,
    )?;
    bindings::v0_2::Plugin::add_to_linker::<PluginState<H>, Older<H>>(linker, |state| {
        Old(state.host())
    })?;
    bindings::v0_1::Plugin::add_to_linker::<PluginState<H>, Older<H>>(linker, |state| {
        Old(state.host())
    })
}
