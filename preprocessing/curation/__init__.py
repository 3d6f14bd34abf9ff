"""fyc-curate: curate fyc-preprocess output folders without recomputing flow.

Data flow (one file per step): merge.py (inputs, collisions) -> reprompt.py -> select.py ->
dedupe.py -> balance.py decide each input row's fate (plan.py); writer.py copies the kept
samples' tar members (members.py), adding latents (latents.py) when asked; pipeline.py runs it
resumably; inspect.py looks inside a folder.
"""
