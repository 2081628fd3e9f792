//! Files through the media repository: upload as a user, and the `m.image` / `m.file` message
//! contents that point at the upload (for `!browse` screenshots and coding agents' files).

use super::{MatrixClient, MatrixError};
use ruma::api::client as cs;
use ruma::events::room::ImageInfo;
use ruma::events::room::message::{
    FileInfo, FileMessageEventContent, ImageMessageEventContent, MessageType, RoomMessageEventContent,
};
use ruma::{OwnedMxcUri, UInt, UserId};

impl MatrixClient {
    /// Uploads `bytes` as `user` (the agent or a ghost) and returns its `mxc://` URI.
    pub async fn upload(
        &self,
        user: &UserId,
        bytes: Vec<u8>,
        content_type: &str,
        filename: &str,
    ) -> Result<OwnedMxcUri, MatrixError> {
        let mut request = cs::media::create_content::v3::Request::new(bytes);
        request.content_type = Some(content_type.to_owned());
        request.filename = (!filename.is_empty()).then(|| filename.to_owned());
        Ok(self.send(request, Some(user)).await?.content_uri)
    }
}

/// Image metadata for [`image_content`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMeta {
    pub width: u32,
    pub height: u32,
    pub mimetype: String,
    pub size: u64,
}

/// An `m.image` message showing the upload at `url`; `body` is the text clients show without
/// the image (its description or file name).
pub fn image_content(url: OwnedMxcUri, body: &str, filename: &str, meta: &ImageMeta) -> RoomMessageEventContent {
    let mut info = ImageInfo::new();
    info.width = Some(UInt::from(meta.width));
    info.height = Some(UInt::from(meta.height));
    info.mimetype = Some(meta.mimetype.clone());
    info.size = UInt::new(meta.size);
    let mut image = ImageMessageEventContent::plain(body.to_owned(), url).info(Box::new(info));
    if !filename.is_empty() && filename != body {
        image.filename = Some(filename.to_owned());
    }
    RoomMessageEventContent::new(MessageType::Image(image))
}

/// An `m.file` message offering the upload at `url` for download.
pub fn file_content(url: OwnedMxcUri, filename: &str, mimetype: &str, size: u64) -> RoomMessageEventContent {
    let mut info = FileInfo::new();
    info.mimetype = Some(mimetype.to_owned());
    info.size = UInt::new(size);
    let file = FileMessageEventContent::plain(filename.to_owned(), url).info(Box::new(info));
    RoomMessageEventContent::new(MessageType::File(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mxc() -> OwnedMxcUri {
        "mxc://test.local/abc123".into()
    }

    #[test]
    fn an_image_carries_its_size_and_type() {
        let meta = ImageMeta { width: 1280, height: 800, mimetype: "image/png".into(), size: 12345 };
        let v = serde_json::to_value(image_content(mxc(), "Screenshot of example.org", "example.png", &meta)).unwrap();
        assert_eq!(v["msgtype"], "m.image");
        assert_eq!(v["url"], "mxc://test.local/abc123");
        assert_eq!(v["body"], "Screenshot of example.org");
        assert_eq!(v["filename"], "example.png");
        assert_eq!(v["info"]["w"], 1280);
        assert_eq!(v["info"]["h"], 800);
        assert_eq!(v["info"]["mimetype"], "image/png");
        assert_eq!(v["info"]["size"], 12345);
    }

    #[test]
    fn a_file_carries_its_name_type_and_size() {
        let v = serde_json::to_value(file_content(mxc(), "report.pdf", "application/pdf", 99)).unwrap();
        assert_eq!(v["msgtype"], "m.file");
        assert_eq!(v["body"], "report.pdf");
        assert_eq!(v["url"], "mxc://test.local/abc123");
        assert_eq!(v["info"]["mimetype"], "application/pdf");
        assert_eq!(v["info"]["size"], 99);
    }
}
