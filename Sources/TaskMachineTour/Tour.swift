public enum TourPlaceholder {}
