"""The stages that train a run: finetune and pretrain, and where each worker of a cluster writes."""
