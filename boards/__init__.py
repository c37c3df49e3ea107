"""Board side: UART (:mod:`.uart`), the framed host link with its host client (:mod:`.link`),
and board tops wrapping a generated accelerator (:mod:`.top`; only the board top requests pins).
Board platforms, PLLs and bitstream builds are not written yet."""
