"""The renderer (chat template and loss masks) is core: `tailor.render`, shared with eval's retention sets.

Re-exported here for the data stage's modules."""

from tailor.render import (CONTEXT_ROLE, Rendered, RenderedArrays, Renderer, Span, TemplateMismatch,  # noqa: F401
                           render_example, renderer_for, split_reasoning)
