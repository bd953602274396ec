"""What the service reads and answers: the request and response bodies of ``/v1/score`` and
``/v1/models`` (their OpenAPI schemas at ``/docs``), the error body, and the request limits."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from pipeline.modeling.prior import star_shares
from pipeline.predict.preprocess import MAX_CHARS

MAX_TEXTS = 256  # per request; more belongs in `douban score -i FILE`
MAX_TEXT_CHARS = MAX_CHARS
# the largest valid request fits: MAX_TEXTS x MAX_TEXT_CHARS characters outside the BMP, each
# escaped by the client as a surrogate pair (\ud83d\ude00: 12 bytes), plus room for the rest
MAX_BODY_BYTES = MAX_TEXTS * MAX_TEXT_CHARS * 12 + (1 << 16)


def _adapt_target(value: Any) -> Any:
    """"em" or five star shares, each refused with what is wrong (a union would answer a
    4-number list with "Input should be 'em'")."""
    if value is None or value == "em":
        return value
    if isinstance(value, str):
        raise ValueError(f'adapt_prior is "em" or five star shares, not {value[:20]!r}')
    if not isinstance(value, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in value
    ):
        raise ValueError('adapt_prior is "em" or a list of five numbers (stars 1-5)')
    try:
        star_shares(value)
    except ValueError as err:
        raise ValueError(f"adapt_prior: {err}") from None
    return [float(x) for x in value]


Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
AdaptTarget = Annotated[Literal["em"] | list[float] | None, BeforeValidator(_adapt_target)]


class ScoreRequest(BaseModel):
    """Texts to score; strict types (a number is not a text, "yes" is not a boolean)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    texts: Annotated[
        list[Text],
        Field(min_length=1, max_length=MAX_TEXTS, description="Reviews, scored in order."),
    ]
    model: str | None = Field(None, description="A model of the run (default: its default).")
    explain: bool = Field(False, description="Add every word's attention (slower).")
    aspects: bool = Field(
        False, description="Add each text's aspect-bearing clauses, each scored alone."
    )
    adapt_prior: AdaptTarget = Field(
        None,
        description="Re-weight the probabilities to another star mix: five shares (stars 1-5), "
        'or "em" to estimate the mix of this request\'s texts (send many; each record is '
        "re-weighted only where the model's validation shows it helps, see reviews_adapted).",
    )


class TopWord(BaseModel):
    word: str
    weight: float


class Word(TopWord):
    start: int
    end: int


class ClauseOpinion(BaseModel):
    """A clause that names film aspects (plot, acting, visuals...), scored alone."""

    clause: str
    start: int = Field(description="Offset of the clause in clean_text.")
    end: int
    aspects: dict[str, list[str]] = Field(description="Aspect -> the words that name it.")
    denied: bool = Field(description="不是X不好，是Y: the complaint is taken back.")
    pred_star: int | None
    expected_star: float | None
    sentiment: float | None = Field(description="-1 (a one-star clause) .. +1 (five stars).")


class ScoreResult(BaseModel):
    """One text's score; ``error`` set (and no star) when the text cannot be scored."""

    row: int
    text: str
    pred_star: int | None
    probs: list[float] | None = Field(description="Probability of stars 1..5.")
    expected_star: float | None
    regression: float | None
    model: str
    attention_model: str | None
    top_words: list[TopWord]
    warnings: list[str]
    error: str | None
    clean_text: str | None = Field(None, description="With explain: the text the model saw.")
    words: list[Word] | None = Field(None, description="With explain: offsets in clean_text.")
    aspects: list[ClauseOpinion] | None = Field(None, description="With aspects: its clauses.")


class ScoreResponse(BaseModel):
    model: str
    records: list[ScoreResult]
    prior: list[float] | None = Field(None, description="The star mix adapted to, if asked.")
    reviews_adapted: bool | None = Field(
        None,
        description="With adapt_prior: whether each record's probabilities and star were "
        're-weighted to the mix (with "em", only where the model\'s validation check shows '
        "it helps; otherwise the records stay as scored and only the mix is estimated).",
    )


class ModelInfo(BaseModel):
    name: str
    default: bool
    loaded: bool


class ModelsResponse(BaseModel):
    run: str
    generation: str = Field(description="The model set served (a new one is picked up).")
    default: str
    models: list[ModelInfo]


class ErrorResponse(BaseModel):
    error: str
    message: str
    hint: str | None = None
    detail: list[dict[str, Any]] | None = None
