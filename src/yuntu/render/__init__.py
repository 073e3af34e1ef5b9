"""The render farm. The pure foundation (no tables, no endpoints): frame specs and chunks
(frames.py), task and frame states (states.py), prices (pricing.py), and the renderers'
command lines and output parsers (contract.py, blender.py, command_template.py)."""
