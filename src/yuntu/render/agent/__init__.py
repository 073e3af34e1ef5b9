"""The render agent (`yuntu agent`, and the local agent inside `yuntu serve`): a separate
process that pulls frame tasks from the server over HTTP only (docs/render-agents.md).

client.py speaks the protocol; runners.py runs renderers (Blender, command templates, the
no-op renderer) and measures them; cache.py keeps scenes by SHA-256; runtime.py is the Agent
(slots, heartbeats, logs, outputs, outcomes); local.py runs one inside `yuntu serve`;
command.py is the `yuntu agent` command."""
