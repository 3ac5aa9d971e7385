"""The workbench: everything that trains, tags, publishes and demos, behind the thin commands.

What ships to the Hub is the flat package at the top (configuration, modeling, song, pipeline,
features, frontend, prototypes, kan); nothing here is shipped, and nothing there imports from here.
Imports point one way: commands (train.py, classify.py, upload_to_hub.py, app.py) -> workbench ->
shipped package.

    settings     train.py's flags: TrainSettings, one default per setting, given-or-default resolved once
    data         recordings (folders), synthetic clips, window rows, splits by recording, feature stats
    training     the model built from settings, the training loop, evaluation
    runs         the run folder; resolving and loading a model spec (run, save_pretrained, .pt, export, Hub id)
    tagging      classify.py's song batches, outputs and resume
    batch        features of many files: worker processes, the on-disk cache
    ray_backend  the same on Ray
    hub_export   a run -> a Hub model folder, and the push
    evaluation, plots, fewshot, synth, model_card, atomic_files: as named
"""
