//! The QR code itself: an SVG drawn on the server by the `qrcode` crate (no external service,
//! no image crate), inlined into the page without its XML prelude.

use qrcode::{EcLevel, QrCode, render::svg};

/// The SVG of `text` (error correction M, at least 240 px), or `None` if it does not fit a QR
/// code (it always does: the link is about 60 bytes).
pub(super) fn svg(text: &str) -> Option<String> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).ok()?;
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(240, 240)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build();
    // Inline SVG must not carry the `<?xml …?>` declaration.
    let start = image.find("<svg")?;
    Some(image[start..].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inline_svg_without_prelude() {
        let image = svg("https://app.example.com/_wxauth/qr/s/AAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert!(image.starts_with("<svg"), "{}", &image[..40]);
        assert!(image.trim_end().ends_with("</svg>"));
        assert!(!image.contains("<?xml"));
    }
}
