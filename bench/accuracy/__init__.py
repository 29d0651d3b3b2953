"""Accuracy beside speed: masked-patch pretraining, fine-tuning and evaluation on the offline tasks.

    recipe.py         the authors' pretraining and fine-tuning recipes, scaled to a CPU budget
    data.py           normalised fbank features of a task split, loaded once per process
    checkpoint.py     writing pretrained checkpoints; building a fine-tuning model from one (or scratch)
    pretrain_loop.py  masked-patch pretraining on the pooled unlabelled training audio
    finetune_loop.py  fine-tuning and evaluation (accuracy, macro-F1)
    rows.py           accuracy cases and their rows in the suite's result schema
    config.py         accuracy run configuration (bench/configs/accuracy*.toml)
    run.py            running one case, or a whole config (resumable), and the printed table
CLI verbs: `pretrain` (bench/cli/pretrain.py), `finetune` (bench/cli/finetune.py), `accuracy`
(bench/cli/accuracy.py); the options pretrain and finetune share: bench/cli/training_args.py.
"""
