//! The Segment e-commerce v2 spec events that Kizuna understands; any other name is a custom event.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcommerceEvent {
    ProductsSearched,
    ProductListViewed,
    ProductListFiltered,
    ProductClicked,
    ProductViewed,
    ProductAdded,
    ProductRemoved,
    CartViewed,
    CheckoutStarted,
    CheckoutStepViewed,
    CheckoutStepCompleted,
    PaymentInfoEntered,
    OrderCompleted,
    OrderUpdated,
    OrderRefunded,
    OrderCancelled,
    CouponEntered,
    CouponApplied,
    CouponDenied,
    CouponRemoved,
    ProductAddedToWishlist,
    ProductRemovedFromWishlist,
    ProductShared,
    CartShared,
    ProductReviewed,
}

const NAMES: &[(&str, EcommerceEvent)] = &[
    ("Products Searched", EcommerceEvent::ProductsSearched),
    ("Product List Viewed", EcommerceEvent::ProductListViewed),
    ("Product List Filtered", EcommerceEvent::ProductListFiltered),
    ("Product Clicked", EcommerceEvent::ProductClicked),
    ("Product Viewed", EcommerceEvent::ProductViewed),
    ("Product Added", EcommerceEvent::ProductAdded),
    ("Product Removed", EcommerceEvent::ProductRemoved),
    ("Cart Viewed", EcommerceEvent::CartViewed),
    ("Checkout Started", EcommerceEvent::CheckoutStarted),
    ("Checkout Step Viewed", EcommerceEvent::CheckoutStepViewed),
    ("Checkout Step Completed", EcommerceEvent::CheckoutStepCompleted),
    ("Payment Info Entered", EcommerceEvent::PaymentInfoEntered),
    ("Order Completed", EcommerceEvent::OrderCompleted),
    ("Order Updated", EcommerceEvent::OrderUpdated),
    ("Order Refunded", EcommerceEvent::OrderRefunded),
    ("Order Cancelled", EcommerceEvent::OrderCancelled),
    ("Coupon Entered", EcommerceEvent::CouponEntered),
    ("Coupon Applied", EcommerceEvent::CouponApplied),
    ("Coupon Denied", EcommerceEvent::CouponDenied),
    ("Coupon Removed", EcommerceEvent::CouponRemoved),
    ("Product Added to Wishlist", EcommerceEvent::ProductAddedToWishlist),
    ("Product Removed from Wishlist", EcommerceEvent::ProductRemovedFromWishlist),
    ("Product Shared", EcommerceEvent::ProductShared),
    ("Cart Shared", EcommerceEvent::CartShared),
    ("Product Reviewed", EcommerceEvent::ProductReviewed),
];

/// The spec event this name denotes, if any. Matching ignores case and surrounding space, because
/// libraries in the wild send "order completed" as often as "Order Completed".
pub fn classify(event_name: &str) -> Option<EcommerceEvent> {
    let name = event_name.trim();
    NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, e)| *e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_spec_names_case_insensitively() {
        assert_eq!(classify("Order Completed"), Some(EcommerceEvent::OrderCompleted));
        assert_eq!(classify(" order completed "), Some(EcommerceEvent::OrderCompleted));
        assert_eq!(classify("Signed Up"), None);
    }
}
