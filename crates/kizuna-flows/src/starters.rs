pub fn starters() {}
