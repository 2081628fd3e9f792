//! The order in which queued jobs of one kind start: in the order they were asked within a room,
//! and rooms taking turns, so one room with thirty questions does not starve the others.

use std::collections::HashMap;

/// `queued` are `(job id, room)` oldest first; `turns` tells, per room, the sequence number of its
/// last start (rooms that never started go first, then the one that waited longest). Returns the
/// job ids in the order they will start.
pub fn fair_order(queued: &[(i64, &str)], turns: &HashMap<String, u64>) -> Vec<i64> {
    let mut round: HashMap<&str, usize> = HashMap::new();
    let mut keyed: Vec<(usize, u64, i64)> = queued
        .iter()
        .map(|&(id, room)| {
            let r = round.entry(room).or_default();
            let key = (*r, turns.get(room).map_or(0, |t| t + 1), id);
            *r += 1;
            key
        })
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, _, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_take_turns_and_keep_their_own_order() {
        // Room a asked 30 times before b and c asked once each.
        let mut queued: Vec<(i64, &str)> = (1..=30).map(|id| (id, "a")).collect();
        queued.push((31, "b"));
        queued.push((32, "c"));
        let order = fair_order(&queued, &HashMap::new());
        assert_eq!(&order[..4], &[1, 31, 32, 2], "b and c start right after a's first");
        let a: Vec<i64> = order.iter().copied().filter(|id| *id <= 30).collect();
        assert_eq!(a, (1..=30).collect::<Vec<_>>(), "a's own jobs stay in order");
    }

    #[test]
    fn the_room_that_waited_longest_goes_first() {
        let queued = [(5, "a"), (6, "b"), (7, "c")];
        // c never started; a started most recently.
        let turns = HashMap::from([("a".to_owned(), 9), ("b".to_owned(), 3)]);
        assert_eq!(fair_order(&queued, &turns), [7, 6, 5]);
    }

    #[test]
    fn nothing_queued_is_nothing_to_order() {
        assert!(fair_order(&[], &HashMap::new()).is_empty());
    }
}
