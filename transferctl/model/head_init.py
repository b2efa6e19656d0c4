"""How the head's classifier starts: `model.head.init: auto | random | linear_probe`.

`linear_probe` starts the classifier from a logistic regression fitted on the frozen backbone's
features (LP-FT, Kumar et al., ICLR 2022), which only makes sense when those features are fixed
while the head learns: when the first phase keeps the whole backbone frozen. So `auto` is
`linear_probe` exactly then, and `random` (Keras's own initialisation) otherwise.
"""

from __future__ import annotations

HEAD_INITS = ("auto", "random", "linear_probe")


def resolve_head_init(head_init: str, first_phase_backbone_frozen: bool) -> str:
    """The head init a run uses: `random` or `linear_probe`.

    Example:
        resolve_head_init("auto", first_phase_backbone_frozen=True)  # "linear_probe"

    Args:
        head_init: `model.head.init`: `auto`, `random` or `linear_probe`.
        first_phase_backbone_frozen: whether the first phase freezes every backbone layer
            (`FreezeReport.backbone_frozen`).
    """
    if head_init not in HEAD_INITS:
        raise ValueError(
            f"`head_init` must be one of {', '.join(HEAD_INITS)}. Received: head_init={head_init!r}"
        )
    if head_init != "auto":
        return head_init
    return "linear_probe" if first_phase_backbone_frozen else "random"
