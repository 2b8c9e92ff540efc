"""Tool calling and structured output (docs/tools.md): the JSON Schema subset edged accepts
(:mod:`.schema`), the generic prompt format for models whose template takes no tools
(:mod:`.generic`), assembling a remote backend's streamed call fragments (:mod:`.assemble`)
and the one check every call and structured answer passes before it leaves the device
(:mod:`.validate`). Pure code: no I/O, imports only types, errors and config."""
