//! Files into the media repository, and the `m.image` / `m.file` messages that show them.

use super::{MatrixClient, MatrixError};
use ruma::api::client as cs;
use ruma::events::room::ImageInfo;
use ruma::events::room::message::{
    FileInfo, FileMessageEventContent, ImageMessageEventContent, MessageType, RoomMessageEventContent,
};
use ruma::{OwnedMxcUri, UInt, UserId};

impl MatrixClient {
    /// Uploads `bytes` as `user`; returns the `mxc://` URI of the file.
    pub async fn upload(
        &self,
        user: &UserId,
        bytes: Vec<u8>,
        content_type: &str,
        filename: &str,
    ) -> Result<OwnedMxcUri, MatrixError> {
        let mut request = cs::media::create_content::v3::Request::new(bytes);
        request.content_type = Some(content_type.to_owned());
        request.filename = Some(filename.to_owned()).filter(|f| !f.is_empty());
        Ok(self.send(request, Some(user)).await?.content_uri)
    }
}

/// Width and height of an image, from its header bytes; `None` for anything else.
pub fn image_size(bytes: &[u8]) -> Option<(u64, u64)> {
    let size = imagesize::blob_size(bytes).ok()?;
    Some((size.width as u64, size.height as u64))
}

/// The message for an uploaded file: `m.image` (with its dimensions) when it is an image of a
/// kind clients show, else `m.file`.
pub fn file_message(
    name: &str,
    url: OwnedMxcUri,
    mimetype: &str,
    size: usize,
    dimensions: Option<(u64, u64)>,
) -> RoomMessageEventContent {
    let size = UInt::try_from(size as u64).ok();
    let msgtype = match dimensions {
        Some((width, height)) if mimetype.starts_with("image/") => {
            let mut info = ImageInfo::new();
            info.mimetype = Some(mimetype.to_owned());
            info.size = size;
            info.width = UInt::try_from(width).ok();
            info.height = UInt::try_from(height).ok();
            MessageType::Image(ImageMessageEventContent::plain(name.to_owned(), url).info(Box::new(info)))
        }
        _ => {
            let mut info = FileInfo::new();
            info.mimetype = Some(mimetype.to_owned());
            info.size = size;
            MessageType::File(FileMessageEventContent::plain(name.to_owned(), url).info(Box::new(info)))
        }
    };
    RoomMessageEventContent::new(msgtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3×2 PNG's first bytes: signature, IHDR length and type, width, height.
    const PNG_3X2: &[u8] = &[
        0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0, 0, 3, 0, 0, 0, 2, 8,
        6, 0, 0, 0,
    ];

    #[test]
    fn images_are_measured_and_other_files_are_not() {
        assert_eq!(image_size(PNG_3X2), Some((3, 2)));
        assert_eq!(image_size(b"just text"), None);
    }

    #[test]
    fn images_get_dimensions_and_files_do_not() {
        let url = OwnedMxcUri::from("mxc://x.y/abc");
        let v = serde_json::to_value(file_message("a.png", url.clone(), "image/png", 29, Some((3, 2)))).unwrap();
        assert_eq!(v["msgtype"], "m.image");
        assert_eq!((v["info"]["w"].as_u64(), v["info"]["h"].as_u64()), (Some(3), Some(2)));
        assert_eq!(v["info"]["size"], 29);
        assert_eq!(v["url"], "mxc://x.y/abc");
        let v = serde_json::to_value(file_message("log.txt", url, "text/plain", 5, None)).unwrap();
        assert_eq!(v["msgtype"], "m.file");
        assert_eq!(v["info"]["mimetype"], "text/plain");
        assert_eq!(v["body"], "log.txt");
    }
}
