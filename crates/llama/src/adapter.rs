//! LoRA adapters through llama.cpp's adapter API.
//!
//! `llama-cpp-2` loads an adapter only from `&mut LlamaModel`, which the engine cannot have:
//! the model is shared (`Arc`) by the context, the vocabulary and the other engines of the
//! process, and adapters are loaded while it serves (hot-loading). llama.cpp's own
//! `llama_adapter_lora_init` takes the model pointer and only reads the model's tensors
//! (and registers the adapter with the model for freeing), so it is called here with the
//! pointer read out of the shared wrapper. This is the crate's only unsafe code.

use std::ffi::CString;
use std::path::Path;
use std::ptr::NonNull;

use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use peregrine_engine::EngineError;

/// Loads the adapter at `path` for `model`. Call it on the engine thread between forward
/// passes: llama.cpp allocates the adapter's buffers and records it in the model.
pub(crate) fn load(model: &LlamaModel, path: &Path) -> Result<LlamaLoraAdapter, EngineError> {
    let failed = |why: &str| EngineError::Load(format!("adapter {}: {why}", path.display()));
    let text = path
        .to_str()
        .ok_or_else(|| failed("the path is not UTF-8"))?;
    let cpath = CString::new(text).map_err(|_| failed("the path holds a NUL byte"))?;
    // SAFETY: `LlamaModel` is `#[repr(transparent)]` over llama-cpp-2's `Ptr`, itself
    // `#[repr(transparent)]` over `NonNull<llama_model>` (llama-cpp-2 is pinned with `=`,
    // so this layout cannot change under us): reading the wrapper as that pointer is
    // reading its only field. The pointer stays valid while `model` is borrowed.
    let raw: NonNull<llama_cpp_sys_2::llama_model> =
        unsafe { *(model as *const LlamaModel).cast::<NonNull<llama_cpp_sys_2::llama_model>>() };
    // SAFETY: a valid model pointer and a NUL-terminated path; llama.cpp returns null on
    // any failure (missing file, wrong architecture, shapes that do not fit the model), and
    // logs why. No forward pass runs meanwhile: the engine thread calls this between them.
    let adapter = unsafe { llama_cpp_sys_2::llama_adapter_lora_init(raw.as_ptr(), cpath.as_ptr()) };
    let adapter = NonNull::new(adapter).ok_or_else(|| {
        failed("llama.cpp refused it (see its log: file, architecture or tensor shapes)")
    })?;
    // SAFETY: `LlamaLoraAdapter` is `#[repr(transparent)]` over `Ptr<llama_adapter_lora>`,
    // `#[repr(transparent)]` over `NonNull<llama_adapter_lora>`: same layout. The adapter
    // lives as long as the model (llama.cpp frees it with the model).
    Ok(unsafe {
        std::mem::transmute::<NonNull<llama_cpp_sys_2::llama_adapter_lora>, LlamaLoraAdapter>(
            adapter,
        )
    })
}
